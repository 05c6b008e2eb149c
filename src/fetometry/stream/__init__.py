"""Stream processing: cine loops, video files and capture devices measured frame by frame.

``fetometry stream INPUT --out DIR`` (``command.py``, registered with the CLI); the work
lives in ``fetometry.stream.processor.run_stream`` and the frame sources in
``fetometry.io.video``. Nothing is imported here, so that the CLI's start stays fast
(``processor`` pulls in PyTorch).
"""
