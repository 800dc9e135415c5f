"""The method registry: ``--method`` -> a list of regularisers.

Methods compose regularisers rather than copying code: ``vatent`` is
``[VAT, Entropy]``. Later methods (LVAT, MAT) register here the same way.
"""
import dataclasses
from typing import Callable, Dict, List, Optional


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A training method.

    Attributes:
      name: the ``--method`` value.
      build: ``build(config) -> list of regularisers``.
      description: one line for ``--helpfull`` and the README.
      epsilon_defaults: ``(dataset, augmented) -> epsilon`` when the method
        has its own table (LVAT); None to use the input-space VAT table.
      uses_unlabeled: False for the supervised baseline (no unlabeled stream).
    """

    name: str
    build: Callable
    description: str
    epsilon_defaults: Optional[Callable] = None
    uses_unlabeled: bool = True


_METHODS: Dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    _METHODS[spec.name] = spec
    return spec


def names() -> List[str]:
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; expected one of {'|'.join(names())}")
    return _METHODS[name]


def build_regularizers(cfg) -> list:
    return get_method(cfg.method).build(cfg)


def _vat(cfg):
    from lvat_tf.regularizers.vat import VAT
    return VAT(epsilon=cfg.epsilon, xi=cfg.xi, num_power_iterations=cfg.num_power_iterations,
               power_iteration=cfg.power_iteration)


def _entropy(cfg):
    from lvat_tf.regularizers.vat import Entropy
    del cfg
    return Entropy()


register(MethodSpec("baseline", lambda cfg: [], "cross-entropy on the labeled batch only",
                    uses_unlabeled=False))
register(MethodSpec("vat", lambda cfg: [_vat(cfg)], "CE + input-space VAT (vat_tf)"))
register(MethodSpec("vatent", lambda cfg: [_vat(cfg), _entropy(cfg)],
                    "CE + VAT + entropy minimisation (vat_tf vatent)"))
