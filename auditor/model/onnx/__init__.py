"""Import ONNX classifiers into the auditor's graph of aten operations.

An ONNX model of the standard CNN op set becomes an `fx.GraphModule` called `gm(x) -> logits`
whose nodes are the aten operations `torch.export` emits for the same layers (`aten.conv2d`,
`aten.batch_norm`, `aten.linear`, `aten.relu`, `aten.max_pool2d`, ...), so layer addressing,
graph splitting, BatchNorm folding and every relevance rule apply to it unchanged. The
initializers become buffers of the GraphModule; operations on constants only (a transposed
Gemm weight, an `Identity` of an initializer) are evaluated at import.

Module paths come from the ONNX nodes (see `onnx_module_paths`): the TorchScript-based
`torch.onnx.export` names a node `/layer1/layer1.0/conv1/Conv` after the modules enclosing it,
which maps back to the paths `layer1`, `layer1.0`, `layer1.0.conv1` that `torch.export` records
for the same operation; the torch.export-based exporter (`dynamo=True`) stores those paths in the
node's `pkg.torch.onnx.name_scopes` metadata.

Any operator outside the supported set is refused with one `ModelLoadError` naming them all;
`load_onnx` also checks the imported graph against ONNX Runtime on a random input.
"""

from auditor.model.onnx.importer import import_onnx, load_onnx
from auditor.model.onnx.parity import check_runtime_parity, random_input
from auditor.model.onnx.reading import read_onnx

__all__ = ["check_runtime_parity", "import_onnx", "load_onnx", "random_input", "read_onnx"]
