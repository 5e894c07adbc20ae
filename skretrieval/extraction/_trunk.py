"""The convolutional trunk of a torchvision classification network.

Built on the meta device (structure only), cut with ``torch.fx`` where the classifier's global
pooling starts, probed for its channels, stride and smallest input; batch normalisation folded
into the convolutions.
"""

import math

import torch
import torchvision
from torch import fx, nn

# Side of the square (meta-device, shape-only) image used to measure a trunk's stride.
_PROBE_SIDE = 1024

# Top-level module names of torchvision's classification heads: the trunk ends before them.
_HEAD_NAMES = frozenset({"classifier", "fc", "head", "heads"})


def check_backbone(backbone):
    """Raise a ValueError unless ``backbone`` names a torchvision classification model."""
    available = torchvision.models.list_models(module=torchvision.models)
    if backbone not in available:
        raise ValueError(
            f"Unknown backbone {backbone!r}: expected the name of a torchvision classification "
            f"model, one of {', '.join(available)}."
        )


def builder_kwargs(backbone, weights_enum):
    """Constructor arguments matching ``weights_enum``, as torchvision's own builders set them."""
    kwargs = {}
    if backbone in ("googlenet", "inception_v3"):
        # Explicit, to silence torchvision's warning; structure is the same either way.
        kwargs["init_weights"] = False
    if weights_enum is not None:
        kwargs["num_classes"] = len(weights_enum.meta["categories"])
        if backbone in ("googlenet", "inception_v3"):
            # Their ImageNet weights expect the model's own input re-normalisation, and ship
            # the auxiliary classifiers' parameters.
            kwargs.update(transform_input=True, aux_logits=True)
    return kwargs


def _build_structure(backbone, kwargs):
    """The classification model on the meta device: its structure, without allocating weights."""
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(backbone, weights=None, **kwargs)
    except (NotImplementedError, RuntimeError):
        # Some constructors (RegNet) compute with tensors; build on CPU without touching the
        # global random number generator, then drop the values.
        with torch.random.fork_rng(devices=[]):
            return torchvision.models.get_model(backbone, weights=None, **kwargs).to("meta")


def _reject_attention(model, backbone):
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__:
            raise ValueError(
                f"Backbone {backbone!r} is a vision transformer ({type(module).__name__} layers): "
                "only convolutional backbones, whose features form a spatial map, are supported."
            )


class _ShapeRecorder(fx.Interpreter):
    """Runs a traced model (on meta tensors) and records the shape of every tensor output."""

    def __init__(self, graph_module):
        super().__init__(graph_module)
        self.shapes = {}

    def run_node(self, node):
        result = super().run_node(node)
        if isinstance(result, torch.Tensor):
            self.shapes[node] = tuple(result.shape)
        return result


def _feature_map_shapes(graph_module, sides):
    """Per node, its output shapes for square meta inputs of the given sides."""
    runs = []
    for side in sides:
        recorder = _ShapeRecorder(graph_module)
        recorder.run(torch.empty(1, 3, side, side, device="meta"))
        runs.append(recorder.shapes)
    return runs


def _cut_trunk(model, backbone):
    """Trace ``model`` and keep the graph up to its last feature map before the classifier.

    A node's output is a feature map when it is ``(N, C, h, w)`` with ``h`` and ``w`` growing
    with the image and ``C`` not. The last such node before the classifier head (modules named
    ``classifier``, ``fc``, ``head`` or ``heads``) is what the global pooling reads: ``features``
    for MobileNet, VGG, EfficientNet, ConvNeXt or SqueezeNet, the blocks before ``avgpool`` for
    ResNet, ResNeXt, RegNet or GoogLeNet, DenseNet's features and final ReLU. Pooling inside
    the trunk (squeeze-and-excitation) does not end it.
    """
    model.eval()
    graph_module = fx.symbolic_trace(model)
    small, large = _feature_map_shapes(graph_module, (512, _PROBE_SIDE))
    end = None
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and node.target.split(".")[0] in _HEAD_NAMES:
            break
        shape, larger = small.get(node), large.get(node)
        if (
            shape is not None
            and larger is not None
            and len(shape) == len(larger) == 4
            and shape[:2] == larger[:2]
            and shape[2] < larger[2]
            and shape[3] < larger[3]
        ):
            end = node
    if end is None:
        raise ValueError(
            f"Backbone {backbone!r} computes no (N, C, h, w) feature map before its classifier: "
            "only convolutional classification backbones are supported."
        )
    output = next(node for node in graph_module.graph.nodes if node.op == "output")
    output.args = (end,)
    graph_module.graph.eliminate_dead_code()
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module, large[end]


def fold_batchnorm(graph_module):
    """Fold every inference-mode BatchNorm2d that directly follows a Conv2d into its weights.

    ``bn(conv(x)) = conv'(x)`` with ``w' = w * s`` and ``b' = (b - mean) * s + beta`` per output
    channel, ``s = gamma / sqrt(var + eps)``. Computed in float64; works on meta tensors too
    (it then only changes the structure).
    """
    graph = graph_module.graph
    modules = dict(graph_module.named_modules())
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        conv_node = node.args[0]
        bn = modules[node.target]
        if (
            not isinstance(conv_node, fx.Node)
            or conv_node.op != "call_module"
            or type(modules[conv_node.target]) is not nn.Conv2d
            or len(conv_node.users) != 1
            or calls[conv_node.target] != 1
            or calls[node.target] != 1
            or bn.running_mean is None
        ):
            continue
        conv = modules[conv_node.target]
        dtype = conv.weight.dtype
        var = bn.running_var.double()
        mean = bn.running_mean.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)
        weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
        conv.weight = nn.Parameter(weight.to(dtype), requires_grad=False)
        conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype), requires_grad=False)
        node.replace_all_uses_with(conv_node)
        graph.erase_node(node)
    graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module


def make_trunk(backbone, kwargs):
    """The convolutional trunk of ``backbone`` on the meta device (structure only).

    Also returns the state dict keys of the whole classification model, and the trunk's output
    shape for a ``_PROBE_SIDE`` square image.
    """
    model = _build_structure(backbone, kwargs)
    _reject_attention(model, backbone)
    model_keys = set(model.state_dict())
    trunk, probe_shape = _cut_trunk(model, backbone)
    return trunk, model_keys, probe_shape


def probe_trunk(trunk, probe_shape):
    """Channels, stride and smallest accepted input side of a meta-device trunk (shapes only).

    The smallest side is the larger of the stride and the smallest input whose feature map is
    not empty (larger for networks with unpadded layers, such as AlexNet or Inception).
    """

    def output_shape(side):
        try:
            return tuple(trunk(torch.empty(1, 3, side, side, device="meta")).shape)
        except RuntimeError:  # "output size is too small" and the like
            return None

    def non_empty(side):
        shape = output_shape(side)
        return shape is not None and shape[2] > 0 and shape[3] > 0

    n_channels = probe_shape[1]
    stride = 2 ** round(math.log2(_PROBE_SIDE / probe_shape[2]))
    if non_empty(stride):  # the usual case: a single probe
        return n_channels, stride, stride
    # Exponential, then binary search above the stride.
    low, high = stride, 2 * stride
    while not non_empty(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if non_empty(middle) else (middle, high)
    return n_channels, stride, high
