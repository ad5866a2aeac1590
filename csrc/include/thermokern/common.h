// Host/device portability macros shared by the CPU and CUDA translation units.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TK_HOST_DEVICE __host__ __device__
#define TK_INLINE __host__ __device__ __forceinline__
#define TK_UNROLL _Pragma("unroll")
#else
#define TK_HOST_DEVICE
#define TK_INLINE inline
#if defined(__clang__)
#define TK_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define TK_UNROLL _Pragma("GCC unroll 16")
#else
#define TK_UNROLL
#endif
#endif
