// The host engine over a Python object's collectives (tpembed.torch's torch.distributed groups).
#include "host_communicator.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tpembed/error.hpp"

namespace nb = nanobind;

namespace tpembed::python {

namespace {

// The object, released with the GIL held whichever thread drops the last copy of the callables.
std::shared_ptr<nb::object> keep(const nb::handle& object) {
  return std::shared_ptr<nb::object>(new nb::object(nb::borrow(object)), [](nb::object* held) {
    nb::gil_scoped_acquire locked;
    delete held;
  });
}

nb::object attribute(const nb::handle& object, const char* name) {
  TPEMBED_EXPECTS(nb::hasattr(object, name), InvalidArgumentError,
                  "a host communicator's collectives need '", name, "', which ",
                  nb::type_name(object.type()).c_str(), " does not have");
  return object.attr(name);
}

std::uintptr_t address(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer); }

}  // namespace

std::unique_ptr<Communicator> make_python_host_communicator(const nb::handle& collectives) {
  HostCollectives c;
  try {
    c.rank = nb::cast<int>(attribute(collectives, "rank"));
    c.size = nb::cast<int>(attribute(collectives, "size"));
    c.name = nb::cast<std::string>(attribute(collectives, "name"));
  } catch (const nb::cast_error&) {
    throw InvalidArgumentError(
        "a host communicator's collectives need int 'rank' and 'size' and a str 'name'");
  }
  const std::shared_ptr<nb::object> reduce = keep(attribute(collectives, "all_reduce_sum"));
  const std::shared_ptr<nb::object> gather = keep(attribute(collectives, "all_gather"));
  // A Python exception reaches the engine as nb::python_error (a std::exception with Python's
  // message), which the engine turns into CommunicatorError.
  c.all_reduce_sum = [reduce](const void* send, void* recv, std::int64_t count, DType dtype) {
    nb::gil_scoped_acquire locked;
    (*reduce)(address(send), address(recv), count, dtype_name(dtype));
  };
  c.all_gather = [gather](const void* send, void* recv, std::int64_t bytes_per_rank) {
    nb::gil_scoped_acquire locked;
    (*gather)(address(send), address(recv), bytes_per_rank);
  };
  return make_host_communicator(std::move(c));
}

void bind_host_communicator(nb::module_& m) {
  m.def(
      "_agree",
      [](const nb::handle& collectives, bool argument_error,
         const std::optional<std::string>& message, const nb::bytes& facts) {
        std::unique_ptr<Communicator> comm = make_python_host_communicator(collectives);
        std::exception_ptr error;
        if (message && argument_error) error = std::make_exception_ptr(InvalidArgumentError(*message));
        if (message && !argument_error) error = std::make_exception_ptr(BackendError(*message));
        const std::size_t bytes = facts.size();
        std::vector<char> all(bytes * static_cast<std::size_t>(comm->size()));
        agree_or_throw(*comm, error, facts.c_str(), bytes, all.data());
        nb::list gathered;
        for (int r = 0; r < comm->size(); ++r) gathered.append(nb::bytes(all.data() + r * bytes, bytes));
        return gathered;
      },
      nb::arg("collectives"), nb::arg("argument_error"), nb::arg("message").none(),
      nb::arg("facts"));
}

}  // namespace tpembed::python
