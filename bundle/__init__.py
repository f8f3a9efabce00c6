"""What training and serving share: the model bundle's contract and the torch-free code that both
sides must run identically.

``training/`` writes bundles and evaluates models offline; ``app/`` serves them. Both import this
package, and it imports neither: only the standard library, numpy and pydantic (no torch,
transformers, onnxruntime, fastapi, ``app`` or ``training``; ``tests/test_import_boundaries.py``
checks every module). What lives here is whatever would otherwise be written twice:

* :mod:`bundle.manifest`: the bundle on disk (``manifest.json`` schema, versioned) and its
  verifying reader;
* :mod:`bundle.batch`: work items padded into the batches the graphs take, and batch outputs cut
  back into rows;
* :mod:`bundle.text`: sentence splitting, English and Chinese;
* :mod:`bundle.qa`: extractive-QA span decoding over sliding windows;
* :mod:`bundle.extractive`: extractive summarisation (sentence spans, packing, selection);
* :mod:`bundle.decoding`: greedy and beam-search decoding over a cached decoder, detokenisation.
"""
