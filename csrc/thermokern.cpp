// thermokern._C: the op schemas (the single source of truth for every backend) and a small
// pybind11 module with build and runtime facts used by thermokern._backend and the tests.
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/library.h>

#include "cpu/isa.h"
#include "cpu/langevin_args.h"
#include "thermokern/philox.h"
#include "thermokern/plan.h"

TORCH_LIBRARY(thermokern, m) {
  // softmax_entropy over the last dim of a (rows, C) tensor with unit inner stride.
  // Returns per-row (entropy, shift, log_norm) in the accumulation dtype (float32; float64
  // for float64), with log p = (x - shift) / T - log_norm (row_stats.h). The shift is the
  // row maximum, or on CPU possibly a value up to 8 T ln 2 below it (see row_stats_kernel.h);
  // any shift gives the same p. These three numbers are all the backward needs: no (rows, C)
  // tensor is saved.
  // inv_t: 1-D tensor of the accumulation dtype holding 1/T, with 1 element (every row) or
  // one per row. Values are checked by the Python layer (finite, > 0).
  m.def(
      "softmax_entropy_fwd(Tensor logits, Tensor inv_t) -> "
      "(Tensor entropy, Tensor shift, Tensor log_norm)");
  m.def(
      "softmax_entropy_bwd(Tensor grad, Tensor logits, Tensor inv_t, Tensor entropy, "
      "Tensor shift, Tensor log_norm) -> Tensor");
  // Each backward of the row ops (softmax_entropy, cross_entropy, token_logprobs) has an
  // in-place twin, <op>_bwd_, with the same arguments, that writes the same gradient over the
  // logits (which must be contiguous) and returns nothing: the language-model heads use them on
  // each chunk, whose logits are not needed once their gradient exists ([Note: in-place
  // backward] in softmax_entropy_plan.h).
  m.def(
      "softmax_entropy_bwd_(Tensor grad, Tensor(a!) logits, Tensor inv_t, Tensor entropy, "
      "Tensor shift, Tensor log_norm) -> ()");
  // Entropy-regularised cross-entropy per row, z = logits / T:
  //   loss = CE(z, target; label_smoothing) - entropy_weight * H(softmax z)
  //          + z_loss_weight * lse(z)^2,
  // 0 for rows whose target is ignore_index. Also returns the softmax_entropy statistics,
  // which are all the backward needs. A target outside [0, C) that is not ignore_index
  // raises on CPU; the CUDA kernels write NaN for it (they never read out of bounds).
  m.def(
      "cross_entropy_fwd(Tensor logits, Tensor target, Tensor inv_t, float entropy_weight, "
      "float label_smoothing, int ignore_index, float z_loss_weight) -> "
      "(Tensor loss, Tensor entropy, Tensor shift, Tensor log_norm)");
  m.def(
      "cross_entropy_bwd(Tensor grad, Tensor logits, Tensor target, Tensor inv_t, Tensor entropy, "
      "Tensor shift, Tensor log_norm, float entropy_weight, float label_smoothing, "
      "int ignore_index, float z_loss_weight) -> Tensor");
  m.def(
      "cross_entropy_bwd_(Tensor grad, Tensor(a!) logits, Tensor target, Tensor inv_t, "
      "Tensor entropy, Tensor shift, Tensor log_norm, float entropy_weight, "
      "float label_smoothing, int ignore_index, float z_loss_weight) -> ()");
  // [Note: token log-probabilities]
  // Per row i of logits (N, C) with target y = target[i] and k = 1/T (inv_t as for
  // softmax_entropy): the softmax_entropy statistics (entropy, shift, log_norm) of every row
  // (ignored ones too), and the log-probability of the target,
  //   logp = log p_y = k (x_y - shift) - log_norm,
  // formed from the shifted difference (no cancellation of lse - z_y for large logits); 0
  // where y == ignore_index. target: (N,) int64. Outputs (N,) in the accumulation dtype.
  // The backward takes the upstream gradients of both outputs, g_l = grad_logp[i] and
  // g_H = grad_entropy[i] (no entropy term when grad_entropy is None), and recomputes p from
  // the statistics in one pass over the row:
  //   grad_logits[i, j] = k [g_l ([j == y] - p_j) - g_H p_j (log p_j + H)],
  //   log p_j = k (x_j - shift) - log_norm,
  // where a term carrying p_j = 0 is 0 (never 0 * -inf); the whole row is 0 where
  // y == ignore_index. Contiguous (N, C), logits' dtype. A target outside [0, C) that is not
  // ignore_index raises on CPU (both ops); the CUDA kernels never read it and write NaN (logp
  // and the gradient row).
  m.def(
      "token_logprobs_fwd(Tensor logits, Tensor target, Tensor inv_t, int ignore_index) -> "
      "(Tensor logp, Tensor entropy, Tensor shift, Tensor log_norm)");
  m.def(
      "token_logprobs_bwd(Tensor grad_logp, Tensor? grad_entropy, Tensor logits, Tensor target, "
      "Tensor inv_t, Tensor entropy, Tensor shift, Tensor log_norm, int ignore_index) -> Tensor");
  m.def(
      "token_logprobs_bwd_(Tensor grad_logp, Tensor? grad_entropy, Tensor(a!) logits, "
      "Tensor target, Tensor inv_t, Tensor entropy, Tensor shift, Tensor log_norm, "
      "int ignore_index) -> ()");

  // [Note: partition statistics]
  // Online statistics of a reduction over dim 1 of a contiguous 3-D (O, R, I) tensor x with
  // R >= 1 (I == 1: rows; I > 1: a middle dimension, reduced without a transposing copy).
  // Output j = o * I + i describes x[o, :, i]. With x' = -x when `negate`, else x, and
  // k = scale[j] (scale: 1-D, accumulation dtype, 1 element or O * I; finite and > 0),
  // z = k x'. An element is *included* when mask is None or true, and weight is None or != 0
  // (a zero weight hides the element, even an infinity or NaN, as in scipy).
  //   shift: a finite value with max(included x') - shift in [0, margin] (the CPU kernels may
  //          stay up to 8 ln 2 / k below the maximum; CUDA and Triton return the maximum);
  //          exactly the maximum when that is +inf or NaN; -inf when nothing is included.
  //   sum:   sum over included of w e^u with u = k (x' - shift) (w = 1 without weight); when
  //          shift = +inf, the sum of w over the included x' = +inf; NaN when shift is NaN;
  //          0 when nothing is included.
  //   m1, m2 (moments == 2): sum w u e^u and sum w u^2 e^u (0 when nothing is included, NaN
  //          when shift is +inf or NaN); with moments == 0 they are empty tensors.
  // So log|sum w e^z| = k * shift + log|sum|, whatever the row holds (the Python layer then
  // gives logsumexp, log Z and the thermodynamic statistics). weight: None or x's shape and
  // dtype; mask: None or x's shape, bool. Outputs are 1-D (O * I) in the accumulation dtype.
  m.def(
      "partition_fwd(Tensor x, Tensor? weight, Tensor? mask, Tensor scale, bool negate, "
      "int moments) -> (Tensor shift, Tensor sum, Tensor m1, Tensor m2)");
  // Backward of any function of those statistics whose derivative w.r.t. z_e is
  //   w_e * g_e,  g_e = p_e * (coef[j,0] + coef[j,1] u_e + coef[j,2] u_e^2),
  //   p_e = e^{u_e - log_norm[j]},  u_e = k (x'_e - shift[j]),
  // (coef: 2-D (O * I, n) with n in 1..3, missing terms 0; g_e = 0 wherever p_e == 0, so
  // that 0 * (-inf) never appears). Returns grad_x = +-k * w * g on included elements (the sign
  // of dz/dx) and 0 elsewhere, in x's dtype; and, when weight_grad (weight given), grad_weight
  // = g on elements the mask keeps (zero weights included: d/dw of w e^z is e^z), 0 elsewhere;
  // an empty tensor otherwise.
  m.def(
      "partition_bwd(Tensor x, Tensor? weight, Tensor? mask, Tensor scale, bool negate, "
      "Tensor shift, Tensor log_norm, Tensor coef, bool weight_grad) -> "
      "(Tensor grad_x, Tensor grad_weight)");

  // [Note: Langevin step]
  // One overdamped Langevin step over every element of x (any shape, read in row-major
  // logical order), as one pass reading x and grad:
  //   v = x - step_size * clip(grad) + noise_std * n,   out = clamp(v, clamp_lo, clamp_hi)
  // with clip(g) = clamp(g, -grad_clip, grad_clip) when grad_clip is given, a missing bound
  // meaning none, and n the standard normal of the element from Philox4x32-10 keyed by seed
  // at counter offset + e / 4 ([Note: Langevin noise layout] in thermokern/philox.h; no noise
  // tensor exists). noise_std == 0 skips the generator. seed and offset are 0-dim int64
  // tensors on x's device, read by the kernels (a CUDA graph can replay a captured step after
  // updating them in place); their bits are taken as uint64. grad has x's shape and dtype.
  // 16-bit inputs compute in float32, float64 in float64; the output is contiguous, x's dtype.
  m.def(
      "langevin_step(Tensor x, Tensor grad, Tensor seed, Tensor offset, float step_size, "
      "float noise_std, float? grad_clip=None, float? clamp_lo=None, float? clamp_hi=None) "
      "-> Tensor");
  // The same step written into x (same noise as langevin_step for the same arguments).
  m.def(
      "langevin_step_(Tensor(a!) x, Tensor grad, Tensor seed, Tensor offset, float step_size, "
      "float noise_std, float? grad_clip=None, float? clamp_lo=None, float? clamp_hi=None) "
      "-> ()");
  // Backward of langevin_step: recomputes v (noise included) to find where the clamp was
  // inactive, clamp_lo < v < clamp_hi (a v on a bound, or NaN, counts as clamped, as in
  // torch.clamp's own backward):
  //   grad_x = grad_out there, else 0;
  //   grad_grad = -step_size * grad_out there and where |grad| < grad_clip, else 0.
  // grad_out has x's shape (any dtype; read as x's dtype); both outputs are contiguous.
  m.def(
      "langevin_step_bwd(Tensor grad_out, Tensor x, Tensor grad, Tensor seed, Tensor offset, "
      "float step_size, float noise_std, float? grad_clip=None, float? clamp_lo=None, "
      "float? clamp_hi=None) -> (Tensor grad_x, Tensor grad_grad)");

  // ---- MALA (thermokern.mala_step) ------------------------------------------------------
  // [Note: MALA acceptance] in thermokern/mala.h. The accept/reject of one MALA step, per
  // chain c (dim 0 of x; each chain is the row-major block x[c]): from x, the proposal x_prop
  // (langevin_step of x with noise_std sqrt(2 step_size temperature) at the same seed and
  // offset), the energy gradients grad = dE/dx at x and grad_prop at x_prop, and the energies
  // (chains,) in the accumulation dtype (float32; float64 for float64 x):
  //   log_alpha = -((E' - E) + S / 4) / T,  S = sum (2 (x - x') + eta (g' - g)) (g + g'),
  //   accepted = log u <= log_alpha, u from word c % 4 of Philox counter
  //              offset + ceil(numel / 4) + c / 4 (after the proposal's counters),
  //   x_new[c] = accepted ? x_prop[c] : x[c].
  // x_prop, grad, grad_prop: x's shape and dtype. Outputs: x_new contiguous (x's shape and
  // dtype), accepted (chains,) bool, log_alpha (chains,) accumulation dtype. Not
  // differentiable (a sampler step). [Note: per-chain MALA parameters] chain_step_size and
  // chain_temperature, when given, replace step_size and temperature: 1-D tensors of the
  // accumulation dtype with one value per chain (or 1 for every chain), chain c using
  // eta_c = chain_step_size[c] and T_c = chain_temperature[c] in the formulas above.
  m.def(
      "mala_accept(Tensor x, Tensor x_prop, Tensor grad, Tensor grad_prop, Tensor energy, "
      "Tensor energy_prop, Tensor seed, Tensor offset, float step_size, float temperature, "
      "Tensor? chain_step_size=None, Tensor? chain_temperature=None) -> "
      "(Tensor x_new, Tensor accepted, Tensor log_alpha)");
  // The MALA proposal with per-chain parameters: for each element e of chain c,
  //   x_new[e] = x[e] - eta_c grad[e] + sigma_c n_e,   sigma_c = sqrt(2 eta_c T_c)
  // (sigma_c evaluated in float64, then rounded to the accumulation dtype), n_e the standard
  // normal langevin_step draws for element e at (seed, offset) ([Note: Langevin noise layout]
  // in thermokern/philox.h). step_size and temperature as chain_step_size and
  // chain_temperature of mala_accept (required here; one value for every chain is
  // langevin_step). grad: x's shape and dtype. Output contiguous, x's shape and dtype. Not
  // differentiable.
  m.def(
      "mala_proposal(Tensor x, Tensor grad, Tensor seed, Tensor offset, Tensor step_size, "
      "Tensor temperature) -> Tensor");
}

// ---------------------------------------------------------------------------------------
// SGLD (thermokern.optim.SGLD): a multi-tensor in-place Langevin step.
TORCH_LIBRARY_FRAGMENT(thermokern, m) {
  // [Note: SGLD step]
  // One stochastic-gradient Langevin step over every tensor of `params`, in one kernel launch
  // (one parallel region on CPU): for each i and each element e of params[i] (row-major
  // logical order, whatever the strides),
  //   g' = grads[i] + weight_decay * params[i],   params[i] = params[i] - lr * g' + noise_std * n
  // with n the standard normal of [Note: Langevin noise layout] (thermokern/philox.h) at
  // Philox counter offset + counter_starts[i] + e / 4, word e % 4, key seed. So tensor i gets
  // exactly the noise of langevin_step(params[i], g', step_size=lr, noise_scale=noise_std,
  // seed, offset + counter_starts[i]), and the caller chooses the counter layout; ranges
  // [counter_starts[i], counter_starts[i] + ceil(numel / 4)) that do not overlap give
  // independent noise (thermokern.optim.SGLD lays its parameters end to end). noise_std == 0
  // skips the generator.
  // All params share one floating dtype and one device; grads[i] has params[i]'s shape, dtype
  // and device, is dense, and may be params[i] itself but no other view overlapping it; the
  // params must not overlap one another. 16-bit params compute in float32, float64 in float64.
  // seed and offset are 0-dim int64 tensors on the params' device, read by the kernel (bits
  // as uint64); offset is not advanced (the caller does that between steps). lr > 0,
  // noise_std >= 0 and weight_decay >= 0 are finite. Non-contiguous params are updated through
  // a contiguous copy (the CPU and CUDA kernels write it back).
  m.def(
      "sgld_step_(Tensor(a!)[] params, Tensor[] grads, Tensor seed, Tensor offset, "
      "int[] counter_starts, float lr, float noise_std, float weight_decay=0.0) -> ()");
}

namespace thermokern {
namespace {
std::atomic<bool> g_poison_outputs{false};
}  // namespace
bool poison_outputs_enabled() { return g_poison_outputs.load(std::memory_order_relaxed); }
}  // namespace thermokern

namespace {

bool cuda_compiled() {
#ifdef THERMOKERN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<std::string> cuda_archs() {
#ifdef THERMOKERN_CUDA_ARCHS
  std::vector<std::string> out;
  std::string s = THERMOKERN_CUDA_ARCHS;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(';', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
#else
  return {};
#endif
}

// Philox4x32-10 words for counters offset .. offset + n - 1 (4 words each), for tests that
// compare the C++ generator with Triton's tl.randint4x.
std::vector<uint32_t> philox_randint4x(uint64_t seed, uint64_t offset, int64_t n) {
  std::vector<uint32_t> out;
  out.reserve(static_cast<size_t>(n) * 4);
  for (int64_t i = 0; i < n; ++i) {
    const auto r = thermokern::philox_randint4x(seed, offset + static_cast<uint64_t>(i));
    out.insert(out.end(), r.x, r.x + 4);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "thermokern native extension: registers torch.ops.thermokern.*";
  m.def("cuda_compiled", &cuda_compiled, "Whether the CUDA kernels were compiled in.");
  m.def("cuda_archs", &cuda_archs, "CUDA architectures the kernels were compiled for.");
  m.def("cpu_isa", [] { return thermokern::cpu::isa_name(thermokern::cpu::active_isa()); },
        "ISA of the CPU kernels in use: default, avx2 or avx512.");
  m.def("cpu_best_isa",
        [] { return thermokern::cpu::isa_name(thermokern::cpu::best_supported_isa()); },
        "Widest ISA this CPU supports among default, avx2, avx512.");
  m.def("_set_cpu_isa", &thermokern::cpu::set_active_isa, pybind11::arg("name"),
        "Force the CPU kernel ISA ('' restores the best one).");
  m.def("_set_poison_outputs", [](bool on) { thermokern::g_poison_outputs.store(on); },
        pybind11::arg("on"), "Fill new op outputs with NaN before the kernels run (tests).");
  m.def("_poison_outputs", &thermokern::poison_outputs_enabled);
  m.def("_philox_randint4x", &philox_randint4x, pybind11::arg("seed"), pybind11::arg("offset"),
        pybind11::arg("n"));
  m.def("_langevin_words", &thermokern::cpu::langevin_words, pybind11::arg("seed"),
        pybind11::arg("offset"), pybind11::arg("n"),
        "Philox words of counters offset .. offset + n - 1 from the vectorised CPU kernel of "
        "the active ISA (4 per counter).");
}
