"""GRPO on a small Hugging Face causal LM, with the per-token log-probs and entropy taken from
the last hidden states by ``thermokern.linear_token_logprobs`` instead of from the logits.

The model is built from a config with random weights (a Llama by default, or a Qwen2; nothing
is downloaded) and trained for a few GRPO steps. Each step:

1. Rollout: for each of ``--prompts`` random prompts, ``--group`` completions of up to
   ``--new-tokens`` tokens, sampled from the model itself (``torch.multinomial`` on the softmax
   of the last position's logits at ``--temperature``, under ``no_grad``, without a KV cache).
   A completion stops at the EOS token (the last id of the vocabulary); what follows is padding.
2. Reward: the fraction of a completion's tokens that fall in a target set, the ids
   ``[0, vocab // 16)`` (so about 1/16 at the start, whatever the vocabulary).
3. Advantages normalised within each group: ``(r - mean_group) / (std_group + 1e-4)``.
4. The old-policy log-probs: one ``no_grad`` pass of the path under test before the updates.
5. ``--inner`` updates (Adam, gradient norm clipped at 1) of the clipped policy-gradient loss
   ``mean_tokens(-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)) - entropy_coef *
   mean_tokens(H)``, where ``ratio = exp(logp - logp_old)``, averaged over the completion tokens
   of the whole batch. No KL term (no reference model). The prompt tokens and the padding are
   masked through ``ignore_index`` in the label tensor (as for prompts of varying length): their
   log-probs and entropies are 0 and get no gradient.

Two paths run the same steps from the same initial weights and seeds:

- thermokern: ``hidden = model.base_model(...).last_hidden_state``, then
  ``thermokern.linear_token_logprobs(hidden, model.lm_head.weight, labels, ignore_index=-100,
  with_entropy=True)``: the (tokens, vocab) logits exist only a bounded chunk at a time.
- stock: ``model(...).logits`` -> ``log_softmax`` -> ``gather``, and the entropy
  ``-(p * logp).sum(-1)`` with ``p = softmax(logits)``.

The thermokern run samples its rollouts from its own policy; the stock run replays them (its
weights differ from the thermokern run's by rounding only, but even that could flip a draw now
and then, after which the two runs would see different data). Printed per update: the loss of
both paths; then the per-token differences at step 0 (same weights, same rollout), and the
peak memory and time of the training part of a step (old-policy pass + updates; the rollout,
sampled once, is timed apart). Peak memory: ``thermokern.bench.PeakMemory``, i.e. on CUDA
``torch.cuda.max_memory_allocated`` minus the allocation before the step, on the CPU the
resident-set high-water mark (an approximation); ``--no-memory`` skips it.

    python examples/grpo_head.py                                   # tiny, a few seconds
    python examples/grpo_head.py --vocab 32000 --hidden 256 --prompts 2 --group 8 \\
        --prompt-len 16 --new-tokens 32 --steps 4                  # 752 positions through the head
    python examples/grpo_head.py --device cuda --vocab 151936 --hidden 896 --layers 4 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

import thermokern
from thermokern.bench import PeakMemory

IGNORE = -100


def _transformers():
    """(AutoModelForCausalLM, {"llama": LlamaConfig, "qwen2": Qwen2Config}).

    transformers 5 imports the ``kernels`` distribution (Hugging Face's hub kernels) when its
    modelling code loads. When this repository's root is on ``sys.path`` (``python -m pytest``
    or ``python -c`` run from the root), the root's ``kernels/`` folder (the sources of
    ``thermokern.kernels``) would be found under that name first; the import is therefore made
    with the root left out of ``sys.path``. Once loaded, the right ``kernels`` stays in
    ``sys.modules``."""
    root = Path(__file__).resolve().parents[1]

    def is_root(entry: str) -> bool:
        try:
            return Path(entry or ".").resolve() == root
        except OSError:
            return False

    shadow = sys.modules.get("kernels")
    if shadow is not None and is_root(str(Path(getattr(shadow, "__file__", "") or "").parent.parent)):
        del sys.modules["kernels"]
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if not is_root(p)]
    try:
        from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config
        from transformers.models.llama import modeling_llama  # noqa: F401  (loads the modelling code)
    finally:
        sys.path[:] = saved
    return AutoModelForCausalLM, {"llama": LlamaConfig, "qwen2": Qwen2Config}


def build_model(
    *, arch: str, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, max_len: int,
    seed: int, device: str, dtype: torch.dtype,
) -> torch.nn.Module:  # fmt: skip
    """A causal LM with random weights (seeded), in train mode, on ``device`` in ``dtype``."""
    auto, configs = _transformers()
    config = configs[arch](
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_len,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = auto.from_config(config)
    return model.to(device=device, dtype=dtype).train()


# ----------------------------------------------------------------------------- rollout
@torch.no_grad()
def sample(model, prompts, group, new_tokens, temperature, eos, gen):
    """``group`` completions per prompt: (ids (B, P + L), completion mask (B, L)). The mask is
    True up to and including the EOS token; later positions hold EOS as padding."""
    ids = prompts.repeat_interleave(group, dim=0)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    mask = []
    for _ in range(new_tokens):
        logits = model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[:, -1].float()
        probs = torch.softmax(logits / temperature, dim=-1)
        tok = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        mask.append(~done)
        tok = torch.where(done, torch.full_like(tok, eos), tok)
        done |= tok == eos
        ids = torch.cat([ids, tok[:, None]], dim=1)
    return ids, torch.stack(mask, dim=1)


def rewards_of(completions, mask, n_target):
    """The fraction of each completion's tokens in the target set ``[0, n_target)``."""
    hit = (completions < n_target) & mask
    return hit.sum(1).float() / mask.sum(1).clamp(min=1).float()


def group_advantages(rewards, group):
    r = rewards.view(-1, group)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
    return adv.reshape(-1)


def labels_of(ids, mask, prompt_len):
    """Next-token labels (B, S - 1): the completion tokens, ``IGNORE`` on prompt and padding."""
    labels = ids[:, 1:].clone()
    labels[:, : prompt_len - 1] = IGNORE
    labels[:, prompt_len - 1 :][~mask] = IGNORE
    return labels


# ----------------------------------------------------------------------------- the two paths
def logprobs_thermokern(model, ids, attn, labels, temperature):
    """(logp, entropy) per position (B, S - 1) from the last hidden states and lm_head.weight."""
    hidden = model.base_model(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
    head = model.lm_head
    return thermokern.linear_token_logprobs(
        hidden[:, :-1], head.weight, labels, bias=head.bias, temperature=temperature,
        ignore_index=IGNORE, with_entropy=True,
    )  # fmt: skip


def logprobs_stock(model, ids, attn, labels, temperature):
    """The same from ``model(...).logits``: log_softmax + gather, eager entropy, masked."""
    logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    keep = labels != IGNORE
    logp = logp_all.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    probs = torch.softmax(logits, dim=-1)
    entropy = -(probs * logp_all).sum(-1)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    return torch.where(keep, logp, zero), torch.where(keep, entropy, zero)


PATHS = {"thermokern": logprobs_thermokern, "stock": logprobs_stock}


def grpo_loss(logp, entropy, old_logp, adv, keep, clip_eps, entropy_coef):
    """The clipped surrogate minus the entropy bonus, averaged over the scored tokens."""
    ratio = torch.exp(logp - old_logp)
    a = adv[:, None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    w = keep.to(logp.dtype)
    n = w.sum().clamp(min=1)
    pg = -(surrogate * w).sum() / n
    ent = (entropy * w).sum() / n
    return pg - entropy_coef * ent, ent


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def train(model, path, *, steps, inner, prompts, group, prompt_len, new_tokens, temperature, lr,
          clip_eps, entropy_coef, seed, device, memory=True, replay=None):  # fmt: skip
    """GRPO with one of the two log-prob paths; a dict of per-step and per-update records.
    ``memory``: probe the peak memory of each step (its gc.collect() costs ~0.2 s a step once
    transformers is loaded); ``replay``: the ``rollouts`` of another run, used instead of
    sampling."""
    logprobs = PATHS[path]
    vocab = model.lm_head.weight.shape[0]
    eos, n_target = vocab - 1, max(1, vocab // 16)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device=device).manual_seed(seed)
    probe = PeakMemory(device) if memory else None
    rec = {k: [] for k in ("loss", "entropy", "grad_norm", "reward", "step_s", "rollout_s", "peak_mib",
                           "rollouts", "completion_len")}  # fmt: skip
    for step in range(steps):
        t0 = time.perf_counter()
        if replay is None:
            prompt_ids = torch.randint(0, vocab - 1, (prompts, prompt_len), generator=gen, device=device)
            ids, mask = sample(model, prompt_ids, group, new_tokens, temperature, eos, gen)
        else:
            ids, mask = (t.to(device) for t in replay[step])
        reward = rewards_of(ids[:, prompt_len:], mask, n_target)
        adv = group_advantages(reward, group)
        labels = labels_of(ids, mask, prompt_len)
        attn = torch.cat([torch.ones_like(ids[:, :prompt_len]), mask.long()], 1)
        keep = labels != IGNORE
        _sync(device)
        t1 = time.perf_counter()
        if probe is not None:
            probe.start()
        t2 = time.perf_counter()
        with torch.no_grad():  # the old-policy snapshot
            old_logp, old_entropy = logprobs(model, ids, attn, labels, temperature)
        for _ in range(inner):
            logp, entropy = logprobs(model, ids, attn, labels, temperature)
            loss, ent = grpo_loss(logp, entropy, old_logp, adv, keep, clip_eps, entropy_coef)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            rec["loss"].append(loss.item())
            rec["entropy"].append(ent.item())
            rec["grad_norm"].append(gnorm.item())
            del logp, entropy, loss
        _sync(device)
        t3 = time.perf_counter()
        rec["peak_mib"].append(None if probe is None else probe.stop())
        rec["step_s"].append(t3 - t2)
        rec["rollout_s"].append(t1 - t0)
        rec["reward"].append(reward.mean().item())
        rec["completion_len"].append(mask.sum(1).float().mean().item())
        rec["rollouts"].append((ids.cpu(), mask.cpu()))
        if step == 0:
            rec["first_logp"], rec["first_entropy"] = old_logp.cpu(), old_entropy.cpu()
            rec["scored_tokens"] = int(keep.sum())
            rec["positions"] = labels.numel()
    rec["memory_method"] = "not measured" if probe is None else probe.method
    return rec


def _summary(values):
    """The median over the steps after the first (the first allocates Adam's state, warms up)."""
    vals = [v for v in (values[1:] if len(values) > 1 else values) if v is not None]
    return statistics.median(vals) if vals else None


def main(
    *, device: str = "cpu", arch: str = "llama", vocab: int = 128, hidden: int = 64, layers: int = 2,
    heads: int = 4, kv_heads: int = 2, prompts: int = 4, group: int = 8, prompt_len: int = 8,
    new_tokens: int = 12, steps: int = 8, inner: int = 2, lr: float = 1e-2, clip_eps: float = 0.2,
    entropy_coef: float = 0.01, temperature: float = 1.0, dtype: str = "float32", seed: int = 0,
    memory: bool = True, verbose: bool = True,
) -> dict:  # fmt: skip
    """Train the same model with both paths; the records of both and their differences."""
    torch_dtype = getattr(torch, dtype)
    base = build_model(
        arch=arch, vocab=vocab, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads,
        max_len=prompt_len + new_tokens, seed=seed, device=device, dtype=torch_dtype,
    )  # fmt: skip
    kwargs = {
        "steps": steps, "inner": inner, "prompts": prompts, "group": group, "prompt_len": prompt_len,
        "new_tokens": new_tokens, "temperature": temperature, "lr": lr, "clip_eps": clip_eps,
        "entropy_coef": entropy_coef, "seed": seed, "device": device, "memory": memory,
    }  # fmt: skip
    # The thermokern run samples from its own policy; the stock run replays those rollouts (its
    # weights differ by rounding only, which could flip a draw now and then and fork the runs).
    tk = train(copy.deepcopy(base), "thermokern", **kwargs)
    st = train(copy.deepcopy(base), "stock", replay=tk["rollouts"], **kwargs)
    norms = zip(tk["grad_norm"], st["grad_norm"], strict=True)
    out = {
        "thermokern": tk,
        "stock": st,
        "loss_max_diff": max(abs(a - b) for a, b in zip(tk["loss"], st["loss"], strict=True)),
        "grad_norm_rel_diff": [abs(a - b) / max(abs(b), 1e-12) for a, b in norms],
        "logp_max_diff": (tk["first_logp"] - st["first_logp"]).abs().max().item(),
        "entropy_max_diff": (tk["first_entropy"] - st["first_entropy"]).abs().max().item(),
        "memory_method": tk["memory_method"],
        "device": device,
    }
    out["grad_norm_max_rel_diff"] = max(out["grad_norm_rel_diff"])
    if verbose:
        _report(out, arch, vocab, hidden, layers, prompts * group, prompt_len + new_tokens, dtype, inner)
    return out


def _report(out, arch, vocab, hidden, layers, seqs, seq_len, dtype, inner):
    tk, st = out["thermokern"], out["stock"]
    print(
        f"GRPO on a random {arch} ({layers} layers, hidden {hidden}, vocab {vocab}, {dtype}, "
        f"{out['device']}): {seqs} sequences x {seq_len} tokens, {tk['positions']} positions "
        f"scored through the head, {tk['scored_tokens']} of them completion tokens at step 0"
    )
    print(
        f"{'step':>6}  {'reward':>7}  {'loss thermokern':>16}  {'loss stock':>14}  {'|diff|':>8}"
        f"  {'grad-norm rel. diff':>19}"
    )
    for i, (a, b) in enumerate(zip(tk["loss"], st["loss"], strict=True)):
        step, k = divmod(i, inner)
        reward = f"{tk['reward'][step]:7.4f}" if k == 0 else " " * 7
        gdiff = out["grad_norm_rel_diff"][i]
        print(f"{step:>4}.{k}  {reward}  {a:16.8f}  {b:14.8f}  {abs(a - b):8.1e}  {gdiff:19.1e}")
    print(
        f"step 0 (same weights, same rollout), largest per-token differences: "
        f"log-prob {out['logp_max_diff']:.1e}, entropy {out['entropy_max_diff']:.1e}. Later steps "
        f"drift apart a little: rounding differences in the weights, amplified by Adam"
    )
    print("training part of a step (old-policy pass + updates), median over steps after the first:")
    for name, rec in (("thermokern", tk), ("stock", st)):
        peak = _summary(rec["peak_mib"])
        mem = "n/a" if peak is None else f"{peak:9.1f} MiB peak extra"
        print(f"  {name:<10}  {_summary(rec['step_s']) * 1e3:9.1f} ms   {mem}")
    print(
        f"  rollout (sampled in the thermokern run, replayed by the stock run): "
        f"{_summary(tk['rollout_s']) * 1e3:.1f} ms per step"
    )
    print(f"  memory probe: {out['memory_method']}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--arch", choices=("llama", "qwen2"), default="llama")
    p.add_argument("--vocab", type=int, default=128)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="completions per prompt")
    p.add_argument("--prompt-len", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=12, help="most tokens per completion")
    p.add_argument("--steps", type=int, default=8, help="rollouts")
    p.add_argument("--inner", type=int, default=2, help="updates per rollout")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--clip-eps", type=float, default=0.2)
    p.add_argument("--entropy-coef", type=float, default=0.01)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory probe")
    main(**vars(p.parse_args()))
