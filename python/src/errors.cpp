// Errors keep the library's message and map by ErrorCode: invalid_argument to tpembed.ArgumentError
// (a ValueError and a TypeError both: a refusal agreed across ranks keeps only its code, so the
// rank that passed a wrong type and its peers raise the one class, which either except clause
// catches), shape_mismatch to ValueError, out_of_range to tpembed.OutOfRangeError (an IndexError
// carrying first_bad_id, position and count), every other code to RuntimeError.
#include <nanobind/nanobind.h>

#include "bindings.hpp"
#include "tpembed/error.hpp"

namespace nb = nanobind;

namespace tpembed::python {

namespace {

PyObject* out_of_range_type = nullptr;  // tpembed.OutOfRangeError, created at import
PyObject* argument_type = nullptr;      // tpembed.ArgumentError, created at import

void raise_out_of_range(const OutOfRangeError& error) {
  PyObject* instance = PyObject_CallFunction(out_of_range_type, "s", error.what());
  if (instance == nullptr) return;  // the call set its own exception
  PyObject_SetAttrString(instance, "first_bad_id", PyLong_FromLongLong(error.first_bad_id()));
  PyObject_SetAttrString(instance, "position", PyLong_FromLongLong(error.position()));
  PyObject_SetAttrString(instance, "count", PyLong_FromLongLong(error.count()));
  PyErr_SetObject(out_of_range_type, instance);
  Py_DECREF(instance);
}

void translate(const std::exception_ptr& pending, void*) {
  try {
    std::rethrow_exception(pending);
  } catch (const OutOfRangeError& error) {
    raise_out_of_range(error);
  } catch (const Error& error) {
    const ErrorCode code = error.code();
    PyObject* type = PyExc_RuntimeError;
    if (code == ErrorCode::invalid_argument) {
      type = argument_type;
    } else if (code == ErrorCode::shape_mismatch) {
      type = PyExc_ValueError;
    } else if (code == ErrorCode::out_of_range) {
      type = PyExc_IndexError;  // an out_of_range Error that lost its id (agreed across ranks)
    }
    PyErr_SetString(type, error.what());
  }
}

}  // namespace

void bind_errors(nb::module_& m) {
  out_of_range_type = PyErr_NewExceptionWithDoc(
      "tpembed.OutOfRangeError",
      "Strict mode found ids outside the addressable rows. An IndexError; `first_bad_id` is the "
      "first such id in flat order, `position` its flat position, `count` how many there were.",
      PyExc_IndexError, nullptr);
  m.attr("OutOfRangeError") = nb::steal(out_of_range_type);
  nb::object argument_bases =
      nb::make_tuple(nb::handle(PyExc_ValueError), nb::handle(PyExc_TypeError));
  argument_type = PyErr_NewExceptionWithDoc(
      "tpembed.ArgumentError",
      "A bad argument: its type, dtype, device, layout or value, named with what was given and "
      "what is accepted. A ValueError and a TypeError both, so the same error raised on every "
      "rank of a group is caught by either.",
      argument_bases.ptr(), nullptr);
  m.attr("ArgumentError") = nb::steal(argument_type);
  nb::register_exception_translator(translate);
}

}  // namespace tpembed::python
