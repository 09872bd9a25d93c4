"""The deploy commands of ``edgeship``: keys, archives, install/rollback, verify/info, labels, serving, streams."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .bundle.signing import fingerprint, generate_keypair, load_public_key

    private, public = generate_keypair(args.output, args.public)
    print(f"wrote {private} (private: keep it on the build machine) and {public} (public: ship it to devices); "
          f"key {fingerprint(load_public_key(public))[:16]}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from .bundle.archive import pack

    if args.release is not None:
        from .device.deploy import set_release

        set_release(args.bundle, args.release, name=args.release_name)  # signed below, with the archive
    out = pack(args.bundle, args.output, sign_key=args.sign)
    print(f"wrote {out} ({out.stat().st_size} bytes{', signed' if args.sign else ''})")
    return 0


def _limits(args: argparse.Namespace):
    from .bundle.archive import ArchiveLimits

    return ArchiveLimits(max_bytes=int(args.max_size_mb * (1 << 20)), max_members=args.max_members)


def _cmd_unpack(args: argparse.Namespace) -> int:
    from .bundle.archive import unpack
    from .bundle.signing import configured_public_key

    bundle = unpack(args.archive, args.output, public_key=configured_public_key(args.verify), limits=_limits(args))
    print(f"unpacked {bundle.path}: {', '.join(f'{t} {p}' for t, p in bundle.variants)}")
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    from .device.deploy import install

    done = install(args.archive, args.into, public_key=args.verify, keep=args.keep, name=args.name,
                   limits=_limits(args), allow_degraded=args.allow_degraded, allow_downgrade=args.allow_downgrade)
    signed = f", signed by key {done.signed_by[:16]}" if done.signed_by else ", signature not checked"
    print(f"installed {done.version} at {done.path}{signed}; {args.into}/current -> {done.version}")
    if done.choice is not None:
        print(f"runs {done.choice.target} {done.choice.precision}: {done.choice.reason}")
    if done.degraded is not None:
        print(f"edgeship install: warning: installed DEGRADED (recorded in history.json): {done.degraded}",
              file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    """`verify`: exit 0 when every artifact that ran passes its self-test, 1 when one fails (2: bad input)."""
    from ._fleet import cpu_flags
    from .bundle.folder import Bundle
    from .bundle.selftest import all_passed, print_results
    from .bundle.signing import configured_public_key
    from .device.choice import describe_cpu

    bundle = Bundle.open(args.bundle, public_key=configured_public_key(args.public_key))
    results = bundle.verify_outputs(args.target, args.precision, threads=args.threads)
    print_results(results, title=f"self-test of {bundle.path} on this machine ({describe_cpu(cpu_flags())})")
    ran = [r for r in results if not r.skipped]
    failed = [r for r in ran if not r.passed]
    if not ran:
        print(f"nothing ran: {results[0].reason}" if len({r.reason for r in results}) == 1 else "nothing ran")
    for r in failed:
        print(f"FAIL {r.target} {r.precision}: {r.reason}", file=sys.stderr)
    return 0 if all_passed(results) else 1


def _cmd_info(args: argparse.Namespace) -> int:
    from .device.choice import print_info

    print_info(args.path)
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from .device.deploy import rollback

    done = rollback(args.into)
    print(f"rolled back: {args.into}/current -> {done.version}")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from .device.deploy import set_postprocess
    from .tasks.postprocess import Postprocess

    labels = None
    if args.labels:
        try:
            labels = [line.strip() for line in Path(args.labels).read_text(encoding="utf-8").splitlines() if line.strip()]
        except FileNotFoundError:
            raise ConfigError(f"labels file not found: {args.labels}") from None
    post = Postprocess(softmax=not args.no_softmax, top_k=args.top_k, output=args.output_name)
    bundle = set_postprocess(args.bundle, labels=labels, postprocess=post, sign_key=args.sign)
    print(f"{bundle.path}: {len(labels) if labels else 'no'} labels, postprocess {post.to_dict()}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from .device.serve import API_KEY_ENV, ServeLimits, serve

    api_key = os.environ.get(API_KEY_ENV) or None
    if args.api_key_file:
        try:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"API key file not found: {args.api_key_file}") from None
    options = {"threads": args.threads} if args.threads else {}
    limits = ServeLimits(workers=args.workers, max_queue=args.max_queue, max_body=int(args.max_body_mb * (1 << 20)),
                         max_uploads=args.max_uploads, max_connections=args.max_connections,
                         header_timeout=args.header_timeout)
    monitor, capture = _monitoring(args, degrade_health=args.degrade_health)
    serve(args.path, args.host, args.port, target=args.target, precision=args.precision, limits=limits,
          api_key=api_key, public_key=args.verify, verbose=args.verbose, monitor=monitor, capture=capture, **options)
    return 0


def _monitoring(args: argparse.Namespace, degrade_health: bool = False) -> tuple[Any, Any]:
    """(MonitorConfig or None, CaptureStore or None) from the monitor flags; any of them turns monitoring on."""
    wanted = args.monitor or args.capture or args.shadow_rate is not None or degrade_health
    if not wanted:
        return None, None
    from .device.captures import CaptureStore
    from .device.monitor import MonitorConfig

    config = MonitorConfig(window=args.monitor_window, min_frames=min(30, args.monitor_window),
                           shadow_rate=args.shadow_rate or 0.0, shadow_budget=args.shadow_budget,
                           cost_budget=args.monitor_cost, degrade_health=degrade_health)
    capture = None
    if args.capture:
        capture = CaptureStore(args.capture, max_bytes=int(args.capture_max_mb * (1 << 20)),
                               max_per_minute=args.capture_per_minute)
    return config, capture


def _cmd_stream(args: argparse.Namespace) -> int:
    import json

    from .device.stream import run_stream

    options = {"threads": args.threads} if args.threads else {}
    monitor, capture = _monitoring(args)
    stats = run_stream(args.path, args.source, args.out, target=args.target, precision=args.precision,
                       public_key=args.verify, max_frames=args.max_frames, live=True if args.live else None,
                       max_reconnects=args.max_reconnects, monitor=monitor, capture=capture, **options)
    print(json.dumps(stats.to_dict()), file=sys.stderr)
    if stats.ended == "disconnected":
        print(f"edgeship stream: error: the source was lost after {stats.reconnects} reconnect attempts",
              file=sys.stderr)
        return 1
    return 0


def _cmd_captures(args: argparse.Namespace) -> int:
    """`captures list|pack|prune|verify`: the hard examples a device kept, on their way back to the build."""
    import json
    from collections import Counter

    from .device import captures as store

    if args.captures_command == "list":
        rows = store.list_captures(args.source)
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        for r in rows:
            label = "-" if r["label"] is None else r["label"]
            print(f"{r['name']}  {','.join(r['reasons']) or '-':<28} label {label!s:<6} bundle {r['bundle'] or '-'}")
        reasons = Counter(reason for r in rows for reason in r["reasons"])
        labelled = sum(r["label"] is not None for r in rows)
        print(f"{len(rows)} captures ({labelled} labelled): " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
        return 0
    if args.captures_command == "pack":
        out = store.pack_captures(args.folder, args.output, sign_key=args.sign, reasons=args.reason)
        print(f"wrote {out} ({out.stat().st_size} bytes{', signed' if args.sign else ''})")
        return 0
    if args.captures_command == "verify":
        key = store.verify_pack(args.pack, args.key)
        count = sum(1 for _ in store.read_captures(args.pack))  # every member against the signed index
        print(f"{args.pack}: signed by key {key[:16]}; {count} captures match the signed index")
        return 0
    older = args.older_than_days * 86400.0 if args.older_than_days is not None else None
    max_bytes = int(args.max_mb * (1 << 20)) if args.max_mb is not None else None
    done = store.prune_captures(args.folder, max_bytes=max_bytes, older_than_s=older, reasons=args.reason)
    print(f"removed {done['removed']} captures; {done['held']} left ({done['bytes']} bytes)")
    return 0
