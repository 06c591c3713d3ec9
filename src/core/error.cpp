#include "tpembed/error.hpp"

namespace tpembed {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::shape_mismatch: return "shape_mismatch";
    case ErrorCode::out_of_range: return "out_of_range";
    case ErrorCode::communicator: return "communicator";
    case ErrorCode::backend: return "backend";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::checkpoint: return "checkpoint";
  }
  return "unknown";
}

void throw_error(ErrorCode code, const std::string& message) {
  switch (code) {
    case ErrorCode::invalid_argument: throw InvalidArgumentError(message);
    case ErrorCode::shape_mismatch: throw ShapeError(message);
    case ErrorCode::communicator: throw CommunicatorError(message);
    case ErrorCode::backend: throw BackendError(message);
    case ErrorCode::unsupported: throw UnsupportedError(message);
    case ErrorCode::checkpoint: throw CheckpointError(message);
    case ErrorCode::out_of_range: break;
  }
  throw Error(code, message);
}

}  // namespace tpembed
