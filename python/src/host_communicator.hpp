// A Python object's collectives as a tpembed communicator (the host engine): how tpembed.torch
// runs tpembed's collectives over a torch.distributed process group.
#pragma once

#include <nanobind/nanobind.h>

#include <memory>

#include "tpembed/communicator.hpp"

namespace tpembed::python {

/// A host communicator whose collectives call `collectives`: an object with `rank` and `size`
/// (ints), `name` (a str, the engine's name) and the methods all_reduce_sum(send, recv, count,
/// dtype) and all_gather(send, recv, bytes_per_rank), which take host addresses (ints), an element
/// count or byte count and a dtype name ("f32", "f16", "bf16", "i32", "i64"), and raise when the
/// collective fails. The calls hold the GIL. Throws InvalidArgumentError naming what is missing.
std::unique_ptr<Communicator> make_python_host_communicator(const nanobind::handle& collectives);

/// _agree(collectives, argument_error, message, facts): agree_or_throw over the host engine of
/// `collectives`: every rank passes its refusal (`message`, None when it has none; an argument
/// error raises ValueError, another RuntimeError) and `facts` (bytes, the same length on every
/// rank); returns every rank's facts, or raises the same error, naming each failing rank, on all.
void bind_host_communicator(nanobind::module_& m);

}  // namespace tpembed::python
