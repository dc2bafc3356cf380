"""Sampling biased toward large subnets, with distillation (1st place of Track 1, stage 2)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import losses
from ..registry import STRATEGIES
from ..sampling import BiasedSampler, build_sampler
from .base import StepContext, Strategy, loss_values
from .baseline import frozen_teacher_logits, learn_labels_and_teacher


@STRATEGIES.register("biased")
class Biased(Strategy):
    """Per step: the ``biased`` sampler's k largest of N candidates drawn from the test archs'
    code distribution (defaults 4 of 400, by FLOPs), plus one ``random_sampler`` subnet on every
    step whose index within the epoch is a multiple of ``random_every`` (steps 0, 3, 6, ... by
    default, as the 1st place's ``step % 3 == 0``).  Each of them learns cross-entropy to the
    labels plus soft cross-entropy to a teacher's predictions, summed over subnets:

    - external teacher: the frozen full network of ``--pretrained`` (the 1st place's official
      ResNet48 teacher), built here from ``Train.pretrained`` unless one is passed in;
    - in-place (no ``--pretrained``, or ``teacher: inplace``): the largest subnet runs first,
      learns cross-entropy, and its detached logits are the teacher of the others.

    Uniform draws favour small subnets' weights (they are shared by every larger one);
    training mostly large subnets of the distribution that is ranked evens that out.

    Options:
        sampler: ``biased`` with its arguments (``candidates``, ``keep``, ``size``: ``flops`` or
            ``channels``, ``archs_path``).
        random_every: r; 0 turns the extra random subnet off.
        random_sampler: the sampler of that subnet (default ``uniform`` over the whole space;
            the 1st place drew it like their candidates, i.e. ``distribution``).
        teacher: ``auto`` (``--pretrained`` when given, else in-place) or ``inplace``.
        distill_temperature: softmax temperature of the distillation term.
    """

    @dataclass
    class Options(Strategy.Options):
        """Knobs of the ``biased`` strategy (see the class docstring)."""

        sampler: Any = "biased"
        random_every: int = 3
        random_sampler: Any = "uniform"
        teacher: str = "auto"
        distill_temperature: float = 1.0

    def __init__(self, space, cfg, options=None, teacher=None, sampler=None):
        super().__init__(space, cfg, options, teacher=teacher, sampler=sampler)
        opts = self.options
        if not isinstance(self.sampler, BiasedSampler):
            raise ValueError(f"strategy 'biased' trains the largest of many candidates and needs the 'biased' "
                             f"sampler, got {_sampler_name(opts.sampler)!r}: set Strategy.sampler to biased "
                             f"(-o Strategy.sampler=biased, or {{name: biased, candidates: 400, keep: 4, size: "
                             f"flops}}), or remove 'sampler' from the config's Strategy section to use the default")
        if opts.teacher not in ("auto", "inplace"):
            raise ValueError(f"Strategy (biased).teacher must be 'auto' or 'inplace', got {opts.teacher!r}")
        if opts.random_every < 0:
            raise ValueError(f"Strategy (biased).random_every must be >= 0 (0: no random subnet), "
                             f"got {opts.random_every}")
        self.random_sampler = build_sampler(space, opts.random_sampler)
        if opts.teacher == "inplace":
            teacher = None
        elif teacher is None and getattr(cfg, "pretrained", None):
            from ..models.pretrained import build_teacher

            teacher = build_teacher(space, cfg.pretrained)
        object.__setattr__(self, "teacher", teacher)  # frozen input: not trained, synced or saved

    @property
    def inplace(self) -> bool:
        """True when the largest subnet of the supernet is the teacher."""
        return self.teacher is None

    def archs(self, ctx: StepContext) -> list:
        """The subnets of this step: the biased group, then the random one on its steps."""
        archs = list(self.sampler.draw(ctx.rng(0), None))
        if self.has_random_subnet(ctx.step):
            archs.append(self.random_sampler.sample(ctx.rng(1)))
        return archs

    def has_random_subnet(self, step: int) -> bool:
        """Whether step ``step`` of an epoch adds the random subnet."""
        return self.options.random_every > 0 and step % self.options.random_every == 0

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        images, labels = batch
        total_ce = total_kd = 0.0
        if self.inplace:
            teacher_logits = ctx.forward(images, self.largest()).logits
            ce = losses.cross_entropy(teacher_logits, labels, self.cfg.label_smoothing)
            ctx.backward(ce)
            total_ce = ce.detach()
        else:
            teacher_logits = frozen_teacher_logits(self.teacher, images, ctx)
        total_ce, total_kd = learn_labels_and_teacher(ctx, images, labels, self.archs(ctx), teacher_logits,
                                                      self.cfg.label_smoothing, self.options.distill_temperature,
                                                      total_ce, total_kd)
        return loss_values(loss=total_ce + total_kd, ce=total_ce, kd=total_kd)


def _sampler_name(spec) -> str:
    """The sampler name a ``Strategy.sampler`` value gives."""
    return spec if isinstance(spec, str) else dict(spec or {}).get("name", "uniform")
