// X-macro lists of the (id x table x output) combinations, so the kernels are compiled in a few
// files (one per table family) and the dispatcher only declares them.
#pragma once

#define TPEMBED_FOR_OUTPUTS(X, Id, Table) \
  X(Id, Table, DType::f32)                \
  X(Id, Table, DType::f16)                \
  X(Id, Table, DType::bf16)

#define TPEMBED_FOR_IDS_AND_OUTPUTS(X, Table)    \
  TPEMBED_FOR_OUTPUTS(X, std::int32_t, Table)    \
  TPEMBED_FOR_OUTPUTS(X, std::int64_t, Table)

#define TPEMBED_FLOAT_TABLES(X)                  \
  TPEMBED_FOR_IDS_AND_OUTPUTS(X, DType::f32)     \
  TPEMBED_FOR_IDS_AND_OUTPUTS(X, DType::f16)     \
  TPEMBED_FOR_IDS_AND_OUTPUTS(X, DType::bf16)

#define TPEMBED_QUANTIZED_TABLES(X)              \
  TPEMBED_FOR_IDS_AND_OUTPUTS(X, DType::i8)      \
  TPEMBED_FOR_IDS_AND_OUTPUTS(X, DType::fp8_e4m3) \
  TPEMBED_FOR_IDS_AND_OUTPUTS(X, DType::i4)

#define TPEMBED_INSTANTIATE_GATHER(Id, Table, Out) \
  template cudaError_t launch_gather_impl<Id, Table, Out>(const LookupParams&, cudaStream_t);
#define TPEMBED_DECLARE_GATHER(Id, Table, Out) \
  extern template cudaError_t launch_gather_impl<Id, Table, Out>(const LookupParams&, cudaStream_t);
