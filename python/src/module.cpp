// The _tpembed extension module and its build queries. The tpembed package (python/tpembed) wraps
// it; dtypes and devices of DLPack arrays are mapped in arrays.cpp.
#include "bindings.hpp"
#include "host_communicator.hpp"
#include "tpembed/communicator.hpp"
#include "tpembed/cuda.hpp"

NB_MODULE(_tpembed, m) {
  m.doc() = "tpembed's C++ core over DLPack; use the tpembed package, which wraps it.";
  m.def("cuda_built", &tpembed::cuda_built, "True when this build has the CUDA backend.");
  m.def("cuda_device_count", &tpembed::cuda_device_count, "CUDA devices visible (0 without CUDA).");
  m.def("mpi_available", &tpembed::mpi_available, "True when this build has the MPI communicator.");
  m.def("nccl_available", &tpembed::nccl_available,
        "True when this build has the NCCL communicator.");
  m.def(
      "nccl_unique_id",
      [] {
        const std::vector<std::uint8_t> id = tpembed::make_nccl_unique_id();
        return nanobind::bytes(reinterpret_cast<const char*>(id.data()), id.size());
      },
      "A new NCCL unique id (bytes): made by one rank, handed to every rank of the group.");
  tpembed::python::bind_errors(m);
  tpembed::python::bind_embedding(m);
  tpembed::python::bind_parallel_embedding(m);
  tpembed::python::bind_gradient(m);
  tpembed::python::bind_host_communicator(m);
}
