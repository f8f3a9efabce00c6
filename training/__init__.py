"""Offline side of the project: tokenizer training, BERT pretraining, fine-tuning, evaluation
and ONNX export. Each stage is one module; ``python -m training <stage> --help`` runs it."""
