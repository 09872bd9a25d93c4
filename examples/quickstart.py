"""Quickstart: the Python API end to end on scikit-learn's digits (runs in ~30 s on 2 cores).

    python examples/quickstart.py [out_dir]
"""

import sys
from pathlib import Path

import edgeship
from edgeship.demo import DIGITS_SPEC, digits_data, train_digits_cnn

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/quickstart")
x_train, y_train, x_val, y_val = digits_data()          # raw uint8 images (N, 32, 32, 1) and labels
model = train_digits_cnn()                               # a trained torch.nn.Module in eval mode

calib = DIGITS_SPEC.apply_preprocess(x_train)            # model-ready float32 (N, 1, 32, 32)
bundle = edgeship.compress(
    model,
    input_spec=DIGITS_SPEC,                              # shape (None, 1, 32, 32) + preprocessing
    calibration=calib,
    targets=["openvino-cpu", "onnxruntime-cpu"],
    precision="int8",
    output=out / "digits.edgeship",
)

with edgeship.load(bundle.path, target="openvino-cpu") as rt:
    scores = rt.run(x_val[:8], preprocess=True)["output"]   # raw images in, the bundle preprocesses
    print("predicted:", scores.argmax(1), "labels:", y_val[:8])

report = edgeship.benchmark([bundle.path], data=(x_val, y_val), metric="top1", reference=model,
                            preprocess=True, measure=edgeship.Measurement(runs=50))
report.print()
report.save(out / "report")                              # report.json + report.md (+ report.html with edgeship[report])
