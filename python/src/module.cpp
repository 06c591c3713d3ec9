// The _tpembed extension module and its build queries. The tpembed package (python/tpembed) wraps
// it; dtypes and devices of DLPack arrays are mapped in arrays.cpp.
#include "bindings.hpp"
#include "tpembed/communicator.hpp"
#include "tpembed/cuda.hpp"

NB_MODULE(_tpembed, m) {
  m.doc() = "tpembed's C++ core over DLPack; use the tpembed package, which wraps it.";
  m.def("cuda_built", &tpembed::cuda_built, "True when this build has the CUDA backend.");
  m.def("cuda_device_count", &tpembed::cuda_device_count, "CUDA devices visible (0 without CUDA).");
  m.def("mpi_available", &tpembed::mpi_available, "True when this build has the MPI communicator.");
  tpembed::python::bind_errors(m);
  tpembed::python::bind_embedding(m);
  tpembed::python::bind_parallel_embedding(m);
}
