"""The inference service: FastAPI + onnxruntime over model bundles. Never imports torch."""
