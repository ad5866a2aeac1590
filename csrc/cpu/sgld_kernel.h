// sgld_step_ CPU kernel, compiled once per ISA ([Note: per-ISA kernels] in csrc/cpu/isa.h).
//
// [Note: the SGLD CPU kernel]
// The op hands the kernel one work space: the Philox counters of all its tensors laid end to
// end (SgldTensor::first_unit, in units of one counter). at::parallel_for splits that space
// evenly whatever the tensor sizes, so one task may finish one tensor and start the next, and a
// large tensor is shared by several tasks: small biases and large weights are balanced
// together, in one parallel region per step. Inside a tensor the kernel is langevin_step's
// (langevin_kernel.h): blocks of langevin::kBlock counters, whose normals go into an L1-resident
// buffer and are then added in one vectorised sweep that reads param and grad and writes param:
//   g' = grad + lambda * param (only when lambda != 0),  param = param - eta g' + sigma n,
// in float for 16-bit params (double for double), in the same operation order as
// langevin_step, so that with lambda = 0 a tensor's update equals langevin_step_ on it.
#pragma once

#include <algorithm>
#include <cstdint>

#include "dispatch.h"
#include "langevin_kernel.h"
#include "sgld_args.h"
#include "vec_math.h"

namespace thermokern::cpu {
inline namespace CPU_CAPABILITY {
namespace sgld {

using langevin::PhiloxKeys;

// Counters [c_begin, c_end) of one tensor (relative to its first counter).
template <typename scalar_t>
void tensor_range(const SgldArgs& a, const SgldTensor& t, const PhiloxKeys& keys, int64_t c_begin,
                  int64_t c_end) {
  using L = Lanes<scalar_t>;
  using acc_t = typename L::acc_t;
  using Va = typename L::Va;
  const Va neg_lr(static_cast<acc_t>(-a.lr));
  const Va sigma(static_cast<acc_t>(a.noise_std));
  const Va wd(static_cast<acc_t>(a.weight_decay));
  const bool has_noise = a.noise_std != 0.0;
  const bool has_wd = a.weight_decay != 0.0;
  auto* p = reinterpret_cast<scalar_t*>(t.param);
  const auto update = [=](const Va& x, Va g, int64_t, const acc_t* z) {
    if (has_wd) g = g + wd * x;
    Va v = x + neg_lr * g;
    if (has_noise) v = v + sigma * Va::loadu(z);
    return v;
  };
  langevin::sweep(keys, a.seed, a.offset + static_cast<uint64_t>(t.counter_start), t.numel, c_begin, c_end,
                  has_noise, p, reinterpret_cast<const scalar_t*>(t.grad), p, langevin::NoBlock{}, update);
}

template <typename scalar_t>
void step(const SgldArgs& a, int64_t w_begin, int64_t w_end) {
  const PhiloxKeys keys(a.seed);
  const SgldTensor* const end = a.tensors + a.n_tensors;
  // The tensor holding w_begin: the last one starting at or before it (none is empty).
  const SgldTensor* t =
      std::upper_bound(a.tensors, end, w_begin,
                       [](int64_t w, const SgldTensor& x) { return w < x.first_unit; }) -
      1;
  for (int64_t w = w_begin; w < w_end && t < end; ++t) {
    const int64_t counters = (t->numel + 3) / 4;
    const int64_t c_begin = w - t->first_unit;
    const int64_t c_end = std::min(counters, w_end - t->first_unit);
    tensor_range<scalar_t>(a, *t, keys, c_begin, c_end);
    w = t->first_unit + c_end;
  }
}

}  // namespace sgld
}  // namespace CPU_CAPABILITY

TK_DEFINE_ISA_ENTRY(sgld_step, SgldArgs, sgld::step)

}  // namespace thermokern::cpu
