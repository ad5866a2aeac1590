// Host/device portability macros shared by the CPU and CUDA translation units.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define TK_HOST_DEVICE __host__ __device__
#define TK_INLINE __host__ __device__ __forceinline__
#else
#define TK_HOST_DEVICE
#define TK_INLINE inline
#endif
