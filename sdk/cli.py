"""The command line: a thin layer over the Python API (the parser here; the commands in _cli_build, _cli_device).

    edgeship compress model.onnx --shape ?,3,224,224 --calib calib.npy --precision int8 -o out/model.edgeship
    edgeship bench out/model.edgeship --data val.npz --metric top1 --report out/report
    edgeship bench --suite core
    edgeship gate out/report/report.json --max-drop 1.0 --max-p99-ms 12 --min-agreement 0.98
    edgeship calib check frames/ --against today/ --preset imagenet
    edgeship tune model.onnx --shape ?,3,224,224 --calib calib.npy --val val.npz --max-drop 1 --latency-ms 5 --ray auto
    edgeship demo
    edgeship targets
    edgeship pack out/model.edgeship -o line3-v1.4.edgeship.tar.gz --sign key.pem
    edgeship install line3-v1.4.edgeship.tar.gz --into /opt/models/line3 --verify key.pub.pem
    edgeship verify /opt/models/line3            # the bundle's self-test on this machine: exit 1 when one fails
    edgeship info /opt/models/line3              # variants, build self-test, this device's cached choice
    edgeship rollback --into /opt/models/line3
    edgeship serve /opt/models/line3 --port 8080
    edgeship stream /opt/models/line3 --source video.mp4 --out results.jsonl --monitor --capture /var/lib/line3
    edgeship captures pack /var/lib/line3 -o line3-captures.tar.gz --sign device.pem
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ._cli_args import _floats
from ._cli_build import (
    _bench_bundles,
    _cmd_calib,
    _cmd_compress,
    _cmd_demo,
    _cmd_gate,
    _cmd_sensitivity,
    _cmd_targets,
    _cmd_tune,
)
from ._cli_device import (
    _cmd_captures,
    _cmd_info,
    _cmd_install,
    _cmd_keygen,
    _cmd_label,
    _cmd_pack,
    _cmd_rollback,
    _cmd_serve,
    _cmd_stream,
    _cmd_unpack,
    _cmd_verify,
)
from ._defaults import CALIBRATION_SIZE
from .errors import EdgeshipError


def _cmd_bench(args: argparse.Namespace) -> int:
    """`bench`: a built-in suite (the suites sit above every stage: only the command line imports them), else bundles."""
    if args.suite:
        from .benchmarks.suites.core import run_core_suite

        run_core_suite(runs=args.runs, threads=args.threads or 2, out=args.report)
        return 0
    return _bench_bundles(args)


def _add_model_input(p: argparse.ArgumentParser) -> None:
    """The model and its input, as compress and tune both take them."""
    p.add_argument("model", help="an .onnx file, or 'package.module:factory' returning a torch nn.Module")
    p.add_argument("--shape", required=True, help="input shape, '?' for dynamic dims, e.g. ?,3,224,224")
    p.add_argument("--input-name", default="input", help="model input name (default: the ONNX model's only input)")
    p.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeship", description="Compress, compile and benchmark models for edge targets.")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="export/quantize/compile an ONNX model into a bundle")
    _add_model_input(c)
    c.add_argument("--calib", help="calibration data: .npy (N, ...), .npz with array 'x', a folder of images, or "
                                   "captures (a capture folder or pack from `edgeship captures pack`)")
    c.add_argument("--raw-calib", action="store_true", help="calibration data are raw uint8 images; apply preprocessing")
    c.add_argument("--scale", type=float, default=1 / 255.0, help="preprocessing scale (raw images)")
    c.add_argument("--mean", type=_floats, default=None, help="preprocessing per-channel mean, e.g. 0.485,0.456,0.406")
    c.add_argument("--std", type=_floats, default=None, help="preprocessing per-channel std")
    c.add_argument("--bgr-to-rgb", action="store_true", help="reverse the channel order of raw images")
    c.add_argument("--targets", default="openvino-cpu,onnxruntime-cpu", help="comma-separated target names")
    c.add_argument("--precision", default="int8", help="comma-separated: fp32, fp16, int8")
    c.add_argument("--calibration-size", type=int, default=None, help=f"calibration subset size (default {CALIBRATION_SIZE})")
    c.add_argument("--seed", type=int, default=None, help="seed of the calibration subset (default 0)")
    c.add_argument("--recipe", help="a recipe TOML file (calibration_size, seed, [prune] ...)")
    c.add_argument("--cpus", default=None,
                   help="comma-separated CPU classes the bundle will run on: x86-64-v3 (default: any AVX2 CPU), "
                        "avx512-vnni, amx, arm64, native; INT8 is made exact on every one")
    c.add_argument("--calibration-method", choices=["auto", "minmax", "percentile", "entropy"], default=None,
                   help="INT8 activation ranges (default auto: measured on --val when given, else MinMax / NNCF's)")
    c.add_argument("--prune", type=float, default=None, help="prune this fraction of channels (torch models)")
    c.add_argument("--prune-latency-ms", type=float, default=None,
                   help="prune the least that meets this p50 latency on the first target/precision")
    c.add_argument("--prune-importance", choices=["l1", "l2", "bn_scale", "taylor"], default=None)
    c.add_argument("--prune-protect", default=None, help="comma-separated module names never pruned")
    c.add_argument("--distill", action="store_true", help="recover the pruned model by label-free distillation")
    c.add_argument("--qat", type=int, default=None, metavar="EPOCHS",
                   help="quantization-aware training for INT8, label-free, this many epochs (torch classifiers; with "
                        "--max-drop only when post-training INT8 needs FP layers)")
    c.add_argument("--max-drop", type=float, default=None,
                   help="INT8 accuracy budget in points of --metric on --val; layers return to FP until it holds")
    c.add_argument("--val", default=None, help="validation .npz with 'x' and 'y' for --max-drop, or labelled captures")
    c.add_argument("--metric", choices=["top1", "top5"], default=None, help="metric of --max-drop (default top1)")
    c.add_argument("-o", "--output", required=True, help="bundle folder to write")
    c.set_defaults(func=_cmd_compress)

    b = sub.add_parser("bench", help="measure accuracy and latency of bundles")
    b.add_argument("bundles", nargs="*", help="bundle folders")
    b.add_argument("--data", help=".npz with 'x' (inputs) and 'y' (labels), .npy inputs, or captures (labelled: "
                                  "accuracy; else agreement and latency), preprocessed as the bundles say")
    b.add_argument("--metric", default="top1", help="top1, top5, or 'package.module:function' (predictions, labels) -> [0, 1]")
    b.add_argument("--runs", type=int, default=100)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--batch-size", type=int, default=1)
    b.add_argument("--threads", type=int, default=None)
    b.add_argument("--streams", type=int, default=1, help="also measure throughput with N concurrent runtimes per variant")
    b.add_argument("--budget", type=float, default=1.0,
                   help="accuracy budget in points: per target the fastest variant within it is marked")
    b.add_argument("--flag-agreement", type=float, default=0.99,
                   help="flag rows agreeing with the reference on less than this fraction of samples")
    b.add_argument("--ci-resamples", type=int, default=200, help="bootstrap resamples for a user metric's interval")
    b.add_argument("--targets", default=None, help="only these targets (comma-separated)")
    b.add_argument("--preprocess", action="store_true", help="--data holds raw images; apply each bundle's preprocessing")
    b.add_argument("--report", help="folder for report.json, report.md and report.html (saved after every row)")
    b.add_argument("--sign", default=None, metavar="KEY",
                   help="Ed25519 private key (PEM): sign the final report.json (report.json.sig) for gate --verify")
    b.add_argument("--suite", choices=["core"], help="run a built-in benchmark suite instead")
    b.add_argument("--option", action="append", metavar="TARGET:NAME=VALUE",
                   help="a runtime option of one target, e.g. openvino-cpu:inference_precision=bf16 (repeatable)")
    b.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                   help="measure each (bundle, target) on a Ray node advertising the target: 'local' starts a "
                        "one-machine cluster, 'auto' joins the one running here, HOST:PORT joins that one")
    b.add_argument("--retries", type=int, default=2, help="Ray: extra attempts for a task whose worker dies or times out")
    b.add_argument("--task-timeout", type=float, default=None, help="Ray: end a task's worker after this many seconds")
    b.set_defaults(func=_cmd_bench)

    g = sub.add_parser("gate", help="check a report against release gates: exit 0 pass, 1 fail, 2 bad input")
    g.add_argument("report", help="report.json (or the folder holding it)")
    g.add_argument("--max-drop", type=float, default=None, help="max accuracy drop vs the reference, in points")
    g.add_argument("--max-relative-drop", type=float, default=None, help="max drop in %% of the reference's accuracy")
    g.add_argument("--max-p50-ms", type=float, default=None)
    g.add_argument("--max-p99-ms", type=float, default=None)
    g.add_argument("--min-throughput", type=float, default=None, help="samples/s")
    g.add_argument("--min-agreement", type=float, default=None, help="top-1 agreement as a fraction, e.g. 0.98")
    g.add_argument("--baseline", default=None, help="an earlier report.json no row may be worse than")
    g.add_argument("--tolerance-accuracy-pts", type=float, default=0.5, help="baseline: accuracy/agreement slack, points")
    g.add_argument("--tolerance-latency-pct", type=float, default=10.0, help="baseline: latency/throughput slack, %%")
    g.add_argument("--require-bundles", action="store_true",
                   help="fail rows whose bundle is not here to re-hash (the default; kept for old scripts)")
    g.add_argument("--allow-missing-bundles", action="store_true",
                   help="rows whose bundle is not on this machine are noted instead of failed")
    g.add_argument("--verify", default=None, metavar="PUB",
                   help="Ed25519 public key (PEM): refuse an unsigned or altered report.json "
                        "(default $EDGESHIP_PUBLIC_KEY)")
    g.add_argument("--html", default=None, help="write the report with the gate results as an HTML page")
    g.set_defaults(func=_cmd_gate)

    s = sub.add_parser("sensitivity", help="per-layer INT8 sensitivity of a bundle's FP32 graph")
    s.add_argument("bundle", help="bundle folder")
    s.add_argument("--calib", required=True, help="calibration .npy, or .npz with 'x'")
    s.add_argument("--data", required=True, help="validation .npz with 'x' and 'y'")
    s.add_argument("--raw", action="store_true", help="inputs are raw images; apply the bundle's preprocessing")
    s.add_argument("--metric", choices=["top1", "top5"], default="top1")
    s.add_argument("--calibration-size", type=int, default=CALIBRATION_SIZE)
    s.add_argument("--out", default=None, help="save the ranking as JSON")
    s.set_defaults(func=_cmd_sensitivity)

    tn = sub.add_parser("tune", help="compile and measure candidate variants; keep the fastest within a budget")
    _add_model_input(tn)
    tn.add_argument("--calib", required=True,
                    help="calibration: .npy (N, ...), .npz with 'x', a folder of images, or captures (folder or pack)")
    tn.add_argument("--val", required=True, help="validation .npz with inputs 'x' and labels 'y', or labelled captures")
    tn.add_argument("--raw-calib", action="store_true",
                    help="--calib/--val arrays are raw uint8 images; apply the preprocessing")
    tn.add_argument("--scale", type=float, default=1 / 255.0, help="preprocessing scale (raw images)")
    tn.add_argument("--mean", type=_floats, default=None, help="preprocessing per-channel mean")
    tn.add_argument("--std", type=_floats, default=None, help="preprocessing per-channel std")
    tn.add_argument("--bgr-to-rgb", action="store_true", help="reverse the channel order of raw images")
    tn.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget vs the FP32 reference, in points")
    tn.add_argument("--latency-ms", type=float, default=None, help="p50 latency budget per call (batch 1), ms")
    tn.add_argument("--metric", default="top1", help="top1, top5, or 'package.module:function' (predictions, labels) -> [0, 1]")
    tn.add_argument("--targets", default="openvino-cpu,onnxruntime-cpu", help="comma-separated target names")
    tn.add_argument("--precisions", default="fp32,fp16,int8,int8+fallback",
                    help="comma-separated among fp32, fp16, int8, int8+fallback (fp16 only where a target has it)")
    tn.add_argument("--prune-ratios", default="0", help="comma-separated pruning ratios, e.g. 0,0.25 (torch models)")
    tn.add_argument("--threads", default="default", help="comma-separated runtime thread counts ('default': the backend's)")
    tn.add_argument("--option", action="append", metavar="TARGET:NAME=V1[,V2...]",
                    help="sweep a runtime option of one target, e.g. openvino-cpu:inference_precision=f32,bf16 "
                         "(repeatable; the combinations are swept)")
    tn.add_argument("--calibration-size", type=int, default=CALIBRATION_SIZE)
    tn.add_argument("--runs", type=int, default=100, help="timed calls per trial")
    tn.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                    help="run trials on Ray: 'local' starts a cluster for the sweep, 'auto' joins the one running "
                         "here, HOST:PORT joins that one")
    tn.add_argument("--retries", type=int, default=2, help="extra attempts for a trial whose worker dies or times out")
    tn.add_argument("--trial-timeout", type=float, default=None, help="Ray: end a trial's worker after this many seconds")
    tn.add_argument("--cache", default=None, help="trial cache folder (default ~/.cache/edgeship/tune)")
    tn.add_argument("--out", default="out/tune", help="folder for best.edgeship and report/ (default out/tune)")
    tn.set_defaults(func=_cmd_tune)

    d = sub.add_parser("demo", help="train a digits CNN, compress it for both CPU targets, benchmark")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--cache", default=None, help="cache folder for the trained weights (default ~/.cache/edgeship)")
    d.add_argument("--runs", type=int, default=200)
    d.add_argument("--threads", type=int, default=None)
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("targets", help="list registered targets and whether they are available here")
    t.set_defaults(func=_cmd_targets)

    k = sub.add_parser("keygen", help="create an Ed25519 key pair (PEM) to sign bundle archives")
    k.add_argument("-o", "--output", required=True, help="private key file to write, e.g. key.pem")
    k.add_argument("--public", default=None, help="public key file (default: key.pub.pem beside it)")
    k.set_defaults(func=_cmd_keygen)

    pk = sub.add_parser("pack", help="write a bundle folder as one archive (.tar, .tar.gz, .tar.zst), optionally signed")
    pk.add_argument("bundle", help="bundle folder")
    pk.add_argument("-o", "--output", required=True, help="archive to write, e.g. model.edgeship.tar.gz")
    pk.add_argument("--sign", default=None, help="Ed25519 private key (PEM) to sign the manifest with")
    pk.add_argument("--release", type=int, default=None,
                    help="record this release number in the manifest: install refuses a lower one of the same model")
    pk.add_argument("--release-name", default=None, help="the model the release number counts for (default: the manifest's)")
    pk.set_defaults(func=_cmd_pack)

    def add_limits(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-size-mb", type=float, default=4096, help="refuse archives unpacking to more (MiB)")
        p.add_argument("--max-members", type=int, default=10_000, help="refuse archives with more members")

    up = sub.add_parser("unpack", help="extract and verify an archive into a new bundle folder")
    up.add_argument("archive")
    up.add_argument("-o", "--output", required=True, help="bundle folder to create")
    up.add_argument("--verify", default=None, help="Ed25519 public key (PEM) the archive must be signed with "
                                                    "(default $EDGESHIP_PUBLIC_KEY)")
    add_limits(up)
    up.set_defaults(func=_cmd_unpack)

    i = sub.add_parser("install", help="install an archive as a new version and switch 'current' to it atomically")
    i.add_argument("archive")
    i.add_argument("--into", required=True, help="install root, e.g. /opt/models/line3")
    i.add_argument("--verify", default=None, help="Ed25519 public key (PEM) the archive must be signed with "
                                                   "(default $EDGESHIP_PUBLIC_KEY)")
    i.add_argument("--keep", type=int, default=2, help="previous versions to keep for rollback (default 2)")
    i.add_argument("--name", default=None, help="version name (default: the archive's name)")
    i.add_argument("--allow-degraded", action="store_true",
                   help="activate it even when no artifact passes its self-test here (recorded in history.json)")
    i.add_argument("--allow-downgrade", action="store_true",
                   help="install a lower release number of a model than one installed here")
    add_limits(i)
    i.set_defaults(func=_cmd_install)

    vf = sub.add_parser("verify", help="run a bundle's self-test here: exit 0 pass, 1 fail, 2 bad input")
    vf.add_argument("bundle", help="bundle folder or install root")
    vf.add_argument("--target", default=None, help="only this target")
    vf.add_argument("--precision", default=None, help="only this precision")
    vf.add_argument("--threads", type=int, default=None, help="threads per runtime (latency)")
    vf.add_argument("--public-key", default=None, help="Ed25519 public key (PEM) the bundle must be signed with "
                                                        "(default $EDGESHIP_PUBLIC_KEY)")
    vf.set_defaults(func=_cmd_verify)

    inf = sub.add_parser("info", help="a bundle's variants, its self-test at build, and this device's choice")
    inf.add_argument("path", help="bundle folder or install root")
    inf.set_defaults(func=_cmd_info)

    r = sub.add_parser("rollback", help="switch 'current' back to the previously installed version")
    r.add_argument("--into", required=True, help="install root")
    r.set_defaults(func=_cmd_rollback)

    lb = sub.add_parser("label", help="record class labels and classification postprocessing in a bundle's manifest")
    lb.add_argument("bundle", help="bundle folder")
    lb.add_argument("--labels", default=None, help="text file, one label per line, in class-index order")
    lb.add_argument("--top-k", type=int, default=5)
    lb.add_argument("--no-softmax", action="store_true", help="the model outputs probabilities already")
    lb.add_argument("--output-name", default=None, help="model output to read (default: the only one)")
    lb.add_argument("--sign", default=None, help="re-sign the changed manifest with this private key (PEM)")
    lb.set_defaults(func=_cmd_label)

    sv = sub.add_parser("serve", help="serve a bundle or install root over HTTP (/v1/predict, /healthz, /metrics)")
    sv.add_argument("path", help="bundle folder or install root (follows 'current', reloads when it moves)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for every interface)")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--target", default=None)
    sv.add_argument("--precision", default=None)
    sv.add_argument("--threads", type=int, default=None, help="threads per runtime")
    sv.add_argument("--workers", type=int, default=1, help="runtimes running requests at once")
    sv.add_argument("--max-queue", type=int, default=8, help="requests waiting beyond the workers; more get 429")
    sv.add_argument("--max-uploads", type=int, default=None,
                    help="request bodies read at once, before admission (default 4 x (workers + max-queue))")
    sv.add_argument("--max-connections", type=int, default=512, help="open connections; more get 503")
    sv.add_argument("--header-timeout", type=float, default=10.0,
                    help="seconds a connection may take to send its request headers before it is closed")
    sv.add_argument("--max-body-mb", type=float, default=16, help="largest request body (MiB); larger get 413")
    sv.add_argument("--api-key-file", default=None, help="require this API key (default $EDGESHIP_API_KEY, if set)")
    sv.add_argument("--verify", default=None, help="Ed25519 public key (PEM) the bundle must be signed with")
    sv.add_argument("--verbose", action="store_true", help="log every request")
    _monitor_arguments(sv)
    sv.add_argument("--degrade-health", action="store_true",
                    help="/healthz answers 503 'degraded' while the shadow agreement alert holds")
    sv.set_defaults(func=_cmd_serve)

    st = sub.add_parser("stream", help="run a bundle over a video file, RTSP/HTTP URL or camera; JSON lines out")
    st.add_argument("path", help="bundle folder or install root")
    st.add_argument("--source", required=True, help="video file, rtsp://... URL, or camera index (0)")
    st.add_argument("--out", default="-", help="JSON-lines file (default: stdout)")
    st.add_argument("--target", default=None)
    st.add_argument("--precision", default=None)
    st.add_argument("--threads", type=int, default=None)
    st.add_argument("--max-frames", type=int, default=None, help="stop after this many processed frames")
    st.add_argument("--live", action="store_true", help="treat a file as live: newest frame only, reopen at its end")
    st.add_argument("--max-reconnects", type=int, default=10, help="reconnect attempts for a live source")
    st.add_argument("--verify", default=None, help="Ed25519 public key (PEM) the bundle must be signed with")
    _monitor_arguments(st)
    st.set_defaults(func=_cmd_stream)
    cap = sub.add_parser("captures", help="the hard examples a device kept: list, pack for the build, prune, verify")
    cap_sub = cap.add_subparsers(dest="captures_command", required=True)
    cl = cap_sub.add_parser("list", help="one line per capture: why it was kept, its label, the bundle")
    cl.add_argument("source", help="a capture folder or pack")
    cl.add_argument("--json", action="store_true", help="print JSON rows instead")
    cp = cap_sub.add_parser("pack", help="a capture folder -> one .tar.gz (every member hashed in index.json)")
    cp.add_argument("folder")
    cp.add_argument("-o", "--output", required=True, help="the pack to write (.tar.gz)")
    cp.add_argument("--sign", default=None, metavar="KEY", help="Ed25519 private key (PEM): sign the index (index.sig)")
    cp.add_argument("--reason", action="append", default=None,
                    help="only captures kept for this reason (repeatable): low-confidence, near-threshold, "
                         "disagreement, drift")
    cv = cap_sub.add_parser("verify", help="check a pack's signature and every member against its index")
    cv.add_argument("pack")
    cv.add_argument("--key", required=True, metavar="PUB", help="the device's Ed25519 public key (PEM)")
    cr = cap_sub.add_parser("prune", help="remove captures from a folder")
    cr.add_argument("folder")
    cr.add_argument("--max-mb", type=float, default=None, help="remove the oldest until the folder holds at most this")
    cr.add_argument("--older-than-days", type=float, default=None, help="remove captures older than this")
    cr.add_argument("--reason", action="append", default=None, help="remove captures kept for this reason (repeatable)")
    cap.set_defaults(func=_cmd_captures)
    cal = sub.add_parser("calib", help="calibration data: check a folder or video (and drift against another)")
    cal_sub = cal.add_subparsers(dest="calib_command", required=True)
    cc = cal_sub.add_parser("check", help="count, near-duplicates, value range and drift; exit 1 on errors")
    cc.add_argument("source", help="a folder of images (recursive), a video file, or captures (folder or pack)")
    cc.add_argument("--against", default=None,
                    help="compare with: a validation/production folder, video or captures, or a bundle (folder or "
                         "install root: its recorded calibration profile, and its own preprocessing)")
    cc.add_argument("--shape", default="?,3,224,224", help="model input shape (default ?,3,224,224)")
    cc.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])
    cc.add_argument("--preset", default="imagenet", choices=["imagenet", "letterbox", "raw"],
                    help="preprocessing preset (default imagenet)")
    cc.add_argument("--resize", default=None, choices=["none", "imagenet", "letterbox", "stretch"],
                    help="override the preset's resize mode")
    cc.add_argument("--size", type=int, default=CALIBRATION_SIZE,
                    help=f"samples drawn from each source (default {CALIBRATION_SIZE})")
    cc.add_argument("--select", default="random", choices=["random", "diverse"])
    cc.add_argument("--seed", type=int, default=0)
    cc.add_argument("--every", type=int, default=None, help="videos: every N-th frame is a candidate (default all)")
    cc.set_defaults(func=_cmd_calib)
    return parser


def _monitor_arguments(p: argparse.ArgumentParser) -> None:
    """The monitor's flags, shared by serve and stream (edgeship.device.monitor.MonitorConfig)."""
    g = p.add_argument_group("monitoring (drift from the calibration record, shadow FP32 agreement, captures)")
    g.add_argument("--monitor", action="store_true", help="watch inputs and answers (implied by the flags below)")
    g.add_argument("--monitor-window", type=int, default=300, help="frames in the drift window (default 300)")
    g.add_argument("--monitor-cost", type=float, default=0.03,
                   help="the monitor's time at most this fraction of the model's (default 0.03; 1: every frame)")
    g.add_argument("--shadow-rate", type=float, default=None,
                   help="fraction of calls the FP32 artifact also runs on, for live INT8-vs-FP32 agreement")
    g.add_argument("--shadow-budget", type=float, default=0.25,
                   help="shadow time at most this fraction of serving time (default 0.25)")
    g.add_argument("--capture", default=None, help="save hard examples (PNG + JSON sidecar) into this folder")
    g.add_argument("--capture-max-mb", type=float, default=500, help="capture folder cap, oldest removed first")
    g.add_argument("--capture-per-minute", type=float, default=60, help="captures saved per minute at most")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EdgeshipError as exc:
        print(f"edgeship {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, a path that vanished: the system's words, no traceback
        print(f"edgeship {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
