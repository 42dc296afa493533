"""Model artefacts as one graph of aten operations: loading, canonical form, ONNX import, receptive fields, the small zoo."""
