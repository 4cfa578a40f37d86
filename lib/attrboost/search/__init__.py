"""The search wing: the ``attrboost`` command and what it is built from.

:mod:`.cli` (fit / index / search / export / serve / demo-data), :mod:`.encoder` (images -> boosted vectors),
:mod:`.bundle` (saved models), :mod:`.index` and :mod:`.items` (faiss index + item table), :mod:`.scale`
(Ray Data), :mod:`.serve` and ``web/`` (the search page and JSON API), :mod:`.export` (ONNX).
"""
