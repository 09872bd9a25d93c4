"""What a model's outputs mean: classification labels and top-k (``postprocess``), detection decoding, NMS
and letterbox undoing (``detection``), and detection metrics — mAP, box agreement (``metrics``).

Above the backends and calibration, below the bundle: a bundle's self-test and the device side (serve,
stream) call these, so every consumer turns outputs into results the same way.
"""
