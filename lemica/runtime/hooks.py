"""One hook mechanism for every policy, built on ``diffusers.hooks``.

Two kinds of hook are registered:

* ``StepHook`` on each transformer: once per transformer call it resolves the global step (from the
  pipeline's scheduler, see ``StepClock``) and the guidance branch (from diffusers' ``cache_context``), asks the
  policy for an ``Action`` and, after the call, stores the block-stack residual of a computed pass.
* ``BlockHook`` on every transformer block: on a computed pass it runs the block and notes the stack's first
  input and latest output; on a reused pass every block passes its inputs through and the last one adds the
  residual, so embeddings, modulation and the output head still run for real; on a forecast pass (feature-level
  fill rules) every block runs.
* ``FeatureHook`` on each attention and feed-forward module of every block, only for policies that fill features
  (``StepPolicy.wants_features``; the modules are the model family's ``feature_modules``): on a computed pass it hands
  the module's output to the policy, on a forecast pass it returns the policy's forecast without running the module.

Which block runs first and last is observed at run time, so a model needs no per-model code as long as
diffusers' ``TransformerBlockRegistry`` says where its blocks keep hidden (and encoder hidden) states.
For stacks that interleave block lists with reshapes in between (Latte's spatial/temporal blocks), the
residual is taken in the last block's layout against a "ghost" pass — the same call with every block passed
through, which costs only the embeddings and reshapes — so that a reused pass lands exactly on
``last output + (drift of the input since the computed step)``, as it does for a plain stack.
"""
from __future__ import annotations

import dataclasses

import torch

from lemica.errors import UnsupportedModelError
from lemica.families import adapter_for
from lemica.runtime.diffusers_compat import (BLOCK_LIST_NAMES, BlockLayout, ContextProbe, HookRegistry, ModelHook,
                                             block_layout, register_block_layout)
from lemica.runtime.policies import Action, StepPolicy

STEP_HOOK = "lemica_step"
BLOCK_HOOK = "lemica_block"
FEATURE_HOOK = "lemica_feature"
HIDDEN, ENCODER = "hidden_states", "encoder_hidden_states"


def register_block(block_class: type, *, hidden_states_index: int = 0,
                   encoder_hidden_states_index: int | None = None) -> None:
    """Teach lemica (and diffusers' own cache hooks) where a custom block returns its streams."""
    register_block_layout(block_class, hidden_states_index, encoder_hidden_states_index)


def find_blocks(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Top-level block lists under diffusers' usual names, in registration order."""
    blocks = []
    for name, child in transformer.named_children():
        if name in BLOCK_LIST_NAMES and isinstance(child, torch.nn.ModuleList):
            blocks.extend((f"{name}.{i}", block) for i, block in enumerate(child))
    if not blocks:
        raise UnsupportedModelError(
            f"{type(transformer).__name__} has no transformer block list (looked for ModuleLists named "
            f"{sorted(BLOCK_LIST_NAMES)})")
    return blocks


def feature_modules(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name in the transformer, module) of every block's attention and feed-forward modules, as the model family
    names them (``lemica.families.FamilyAdapter.feature_modules``); UnsupportedModelError where the family does
    not name them or a block lacks one."""
    family = adapter_for(transformer)
    if not family.feature_modules:
        raise UnsupportedModelError(
            f"feature-level fill rules (feature-reuse, feature-taylor) need to know which submodules of a "
            f"{type(transformer).__name__} block are attention and feed-forward; the {family.name!r} model family "
            f"does not say (lemica.families.FamilyAdapter.feature_modules); use a residual or output rule")
    found = []
    for block_name, block in find_blocks(transformer):
        for sub in family.feature_modules:
            module = getattr(block, sub, None)
            if not isinstance(module, torch.nn.Module):
                raise UnsupportedModelError(
                    f"{type(transformer).__name__} block {block_name} ({type(block).__name__}) has no submodule "
                    f"{sub!r}, which the {family.name!r} family names for feature-level fill rules")
            found.append((f"{block_name}.{sub}", module))
    return found


def layout_of(block: torch.nn.Module) -> BlockLayout:
    layout = block_layout(type(block))
    if layout is None:
        raise UnsupportedModelError(
            f"block class {type(block).__name__} is not in diffusers' TransformerBlockRegistry, so lemica does not "
            f"know where it returns its hidden states; register it with lemica.register_block("
            f"{type(block).__name__}, hidden_states_index=..., encoder_hidden_states_index=...)")
    return layout


@dataclasses.dataclass
class _Pass:
    """What one transformer call is doing; shared by its block hooks."""
    action: Action
    branch: str
    residual: dict[str, torch.Tensor] | None = None  # stored residual of this branch (added on a reused pass)
    step: int = -1
    refine: bool = False  # ask the policy again at the first block (dynamic policies such as TeaCache)
    tail: str | None = None  # the block that adds it (last to run)
    first_inputs: dict[str, torch.Tensor] | None = None
    last_outputs: dict[str, torch.Tensor] | None = None
    tail_inputs: dict[str, torch.Tensor] | None = None  # seen on a ghost pass
    order: list[str] = dataclasses.field(default_factory=list)
    residual_added: bool = False


class StepHook(ModelHook):
    """Transformer-level hook: one policy decision per call."""

    _is_stateful = True

    def __init__(self, controller, name: str):
        super().__init__()
        self.controller = controller
        self.name = name
        self.context = ContextProbe()  # diffusers sets the pipeline's cache_context on it
        self.residuals: dict[str, dict[str, torch.Tensor]] = {}  # per guidance branch
        self.current: _Pass | None = None
        self.tail: str | None = None  # last block to run (the last registered one; checked on computed passes)
        self.interleaved: bool | None = None  # block lists interleave: residuals need a ghost pass

    def new_forward(self, module, *args, **kwargs):
        ctrl = self.controller
        if not ctrl.clock.running or self.current is not None:
            return self.fn_ref.original_forward(*args, **kwargs)
        step = ctrl.clock.step_index
        branch = ctrl.clock.branch(self.name, self.context.name())
        policy: StepPolicy = ctrl.policy
        if policy.wants_inputs:
            policy.inputs(step, branch, self.name, args, kwargs)
        action = Action(policy.action(step, branch))
        stored = self.residuals.get(branch)
        if (action is Action.REUSE and stored is None) or (
                action is Action.FORECAST and not policy.has_features(step, branch, self.name)):
            action = Action.COMPUTE  # nothing cached yet for this branch/transformer (e.g. first Wan2.2 low-noise step)
            ctrl.stats.forced.append((step, branch, self.name))
        elif action is Action.REUSE:
            stored = policy.reuse_residual(step, branch, self.name, stored)  # a fill rule may change it
        if action is Action.SERVE:
            output, residual = policy.served_output(step, branch, self.name)
            if residual is not None:  # lets later steps reuse a residual that was recorded, not recomputed
                self.residuals[branch] = residual
            ctrl.stats.add(step, branch, self.name, action)
            policy.observe(step, branch, self.name, action, output, residual)
            return output

        current = _Pass(action, branch, residual=stored, tail=self.tail, step=step,
                        refine=policy.refines)
        output = self._run(current, args, kwargs)
        action = current.action  # a dynamic policy may have revised it at the first block
        residual = None
        if action is Action.COMPUTE:
            self._learn_structure(current)
            ghost = None
            if self.interleaved:
                ghost = _Pass(Action.REUSE, branch, residual={}, tail=self.tail)
                self._run(ghost, args, kwargs)
            residual = self._residual_of(current, ghost)
            self.residuals[branch] = residual
        elif action is Action.FORECAST:
            if not current.order:
                raise UnsupportedModelError(f"{type(module).__name__}: no transformer block ran during a forecast step")
        elif not current.residual_added:
            raise UnsupportedModelError(f"{type(module).__name__}: no transformer block ran during a reused step")
        ctrl.stats.add(step, branch, self.name, action)
        policy.observe(step, branch, self.name, action, output, residual)
        return output

    def _run(self, p: _Pass, args, kwargs):
        self.current = p
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            self.current = None

    def _learn_structure(self, p: _Pass) -> None:
        if p.first_inputs is None:
            raise UnsupportedModelError("no transformer block ran during the transformer call")
        if p.order[-1] != self.tail:
            raise UnsupportedModelError(f"the last block to run was {p.order[-1]}, not the last registered block "
                                        f"{self.tail}; lemica cannot tell where the block stack ends")
        if self.interleaved is None:
            ranks = [self.controller.block_rank[self.name][b] for b in p.order]
            self.interleaved = ranks != sorted(ranks)

    def _residual_of(self, p: _Pass, ghost: _Pass | None) -> dict[str, torch.Tensor]:
        base = ghost.tail_inputs if ghost is not None else p.first_inputs
        residual = {}
        for stream, last in p.last_outputs.items():
            first = base.get(stream)
            if first is None:
                continue
            if last.shape != first.shape:
                raise UnsupportedModelError(
                    f"the block stack changes the shape of {stream} ({tuple(first.shape)} -> {tuple(last.shape)}) "
                    f"without interleaving block lists; lemica cannot place a residual for it")
            residual[stream] = last - first
        if HIDDEN not in residual:
            raise UnsupportedModelError("could not find the hidden states in the first/last transformer block")
        return residual

    def reset_state(self, module):
        # Called by pipeline.maybe_free_model_hooks() at the end of every call: drop cached tensors.
        self.residuals.clear()
        self.context.reset()
        self.current = None
        return module


class BlockHook(ModelHook):
    """Block-level hook: run (and observe) or pass through, as the transformer's current pass says."""

    def __init__(self, step_hook: StepHook, name: str):
        super().__init__()
        self.step_hook = step_hook
        self.name = name
        self.layout: BlockLayout | None = None

    def initialize_hook(self, module):
        self.layout = layout_of(module)
        return module

    def _inputs(self, args, kwargs) -> dict[str, torch.Tensor]:
        streams = {HIDDEN: self.layout.hidden_input(args, kwargs)}
        if self.layout.encoder_index is not None:
            streams[ENCODER] = self.layout.encoder_input(args, kwargs)
        return streams

    def _outputs(self, output) -> dict[str, torch.Tensor]:
        if not isinstance(output, tuple):
            return {HIDDEN: output}
        streams = {HIDDEN: output[self.layout.hidden_index]}
        if self.layout.encoder_index is not None:
            streams[ENCODER] = output[self.layout.encoder_index]
        return streams

    def _pack(self, streams: dict[str, torch.Tensor]):
        if self.layout.encoder_index is None:
            return streams[HIDDEN]
        out = [None, None]
        out[self.layout.hidden_index] = streams[HIDDEN]
        out[self.layout.encoder_index] = streams[ENCODER]
        return tuple(out)

    def new_forward(self, module, *args, **kwargs):
        p = self.step_hook.current
        if p is None:  # called outside a policed transformer call
            return self.fn_ref.original_forward(*args, **kwargs)
        if p.refine:
            p.refine = False
            action = Action(self.step_hook.controller.policy.refine(p.step, p.branch, p.action, args, kwargs))
            p.action = action if (action is not Action.REUSE or p.residual is not None) else Action.COMPUTE
        if p.action is Action.COMPUTE:
            if p.first_inputs is None:
                p.first_inputs = self._inputs(args, kwargs)
            output = self.fn_ref.original_forward(*args, **kwargs)
            p.last_outputs = self._outputs(output)
            p.order.append(self.name)
            return output
        if p.action is Action.FORECAST:  # norms, modulation and gates run; FeatureHooks fill attention and FFN
            p.order.append(self.name)
            return self.fn_ref.original_forward(*args, **kwargs)
        inputs = self._inputs(args, kwargs)
        if self.name == p.tail:
            p.tail_inputs = inputs
            p.residual_added = True
            inputs = {k: (v + p.residual[k] if k in p.residual else v) for k, v in inputs.items()}
        return self._pack(inputs)


class FeatureHook(ModelHook):
    """Attention / feed-forward module hook (feature-level fill rules): hand the output of a computed pass to the
    policy, return the policy's forecast on a forecast pass (the module does not run)."""

    def __init__(self, step_hook: StepHook, name: str):
        super().__init__()
        self.step_hook = step_hook
        self.name = name

    def new_forward(self, module, *args, **kwargs):
        p = self.step_hook.current
        if p is None or p.action is Action.REUSE:
            return self.fn_ref.original_forward(*args, **kwargs)
        policy = self.step_hook.controller.policy
        if p.action is Action.FORECAST:
            return policy.forecast_feature(p.step, p.branch, self.step_hook.name, self.name)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if p.action is Action.COMPUTE:
            policy.observe_feature(p.step, p.branch, self.step_hook.name, self.name, output)
        return output


def validate(transformer: torch.nn.Module, features: bool = False) -> None:
    """Raise UnsupportedModelError unless every block's stream layout is known (and, with ``features``, the
    family's attention and feed-forward modules)."""
    for _, block in find_blocks(transformer):
        layout_of(block)
    if features:
        feature_modules(transformer)


def attach(transformer: torch.nn.Module, controller, name: str) -> StepHook:
    """Hook ``transformer`` and its blocks (already validated by the caller) for ``controller``'s policy."""
    blocks = find_blocks(transformer)
    step_hook = StepHook(controller, name)
    step_hook.tail = blocks[-1][0]
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(step_hook, STEP_HOOK)
    controller.block_rank[name] = {block_name: rank for rank, (block_name, _) in enumerate(blocks)}
    for block_name, block in blocks:
        HookRegistry.check_if_exists_or_initialize(block).register_hook(BlockHook(step_hook, block_name), BLOCK_HOOK)
    if controller.policy.wants_features:
        for module_name, module in feature_modules(transformer):
            HookRegistry.check_if_exists_or_initialize(module).register_hook(FeatureHook(step_hook, module_name),
                                                                              FEATURE_HOOK)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    return step_hook


def detach(transformer: torch.nn.Module) -> None:
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(STEP_HOOK, recurse=False)
    registry.remove_hook(BLOCK_HOOK, recurse=True)
    registry.remove_hook(FEATURE_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()
