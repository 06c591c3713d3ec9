// Macros that let one header serve host C++ and CUDA device code.
#pragma once

#if defined(__CUDACC__)
/// Marks a function callable from host and device code when compiled by nvcc.
#define TPEMBED_HD __host__ __device__
#else
#define TPEMBED_HD
#endif
