// Typed errors. Every failure tpembed reports is one of these, with a message that says what was
// wrong and, for multi-rank work, on which rank.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace tpembed {

/// What kind of failure an Error reports; lets bindings map errors to their own exception types.
enum class ErrorCode : std::uint8_t {
  invalid_argument,  ///< A bad argument: wrong dtype, rank, sharding dim, null data...
  shape_mismatch,    ///< Shapes that do not fit together (locally or across the tp group).
  out_of_range,      ///< Strict mode found ids outside the addressable rows.
  communicator,      ///< A collective or communicator set-up failed.
  backend,           ///< The backend (CUDA, NCCL, MPI library) reported a failure.
  unsupported,       ///< The feature was not built in (e.g. MPI or CUDA missing).
  checkpoint,        ///< A checkpoint file is missing, unreadable, malformed or lacks a tensor.
};

/// Name of an error code ("invalid_argument", ...).
const char* error_code_name(ErrorCode code);

/// Base of every tpembed exception.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  /// The kind of failure.
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

/// A bad argument (dtype, rank, sharding dim, null pointer with nonzero size...).
class InvalidArgumentError : public Error {
 public:
  explicit InvalidArgumentError(const std::string& m) : Error(ErrorCode::invalid_argument, m) {}
};

/// Shapes that do not fit together.
class ShapeError : public Error {
 public:
  explicit ShapeError(const std::string& m) : Error(ErrorCode::shape_mismatch, m) {}
};

/// Strict mode: ids outside the addressable rows. Carries the first bad id and its position.
class OutOfRangeError : public Error {
 public:
  OutOfRangeError(const std::string& m, std::int64_t first_bad_id, std::int64_t position,
                  std::int64_t count)
      : Error(ErrorCode::out_of_range, m),
        first_bad_id_(first_bad_id),
        position_(position),
        count_(count) {}
  /// Value of the first out-of-range id (in flat order).
  std::int64_t first_bad_id() const noexcept { return first_bad_id_; }
  /// Flat position of that id in the ids tensor.
  std::int64_t position() const noexcept { return position_; }
  /// How many ids were out of range in total.
  std::int64_t count() const noexcept { return count_; }

 private:
  std::int64_t first_bad_id_, position_, count_;
};

/// A communicator or collective failed (including a mismatch detected across ranks).
class CommunicatorError : public Error {
 public:
  explicit CommunicatorError(const std::string& m) : Error(ErrorCode::communicator, m) {}
};

/// A backend library (CUDA, NCCL, MPI) returned an error status.
class BackendError : public Error {
 public:
  explicit BackendError(const std::string& m) : Error(ErrorCode::backend, m) {}
};

/// The feature is not part of this build.
class UnsupportedError : public Error {
 public:
  explicit UnsupportedError(const std::string& m) : Error(ErrorCode::unsupported, m) {}
};

/// A checkpoint (safetensors file or index) that cannot be opened, is malformed or hostile, or
/// lacks a requested tensor. The message starts with the file's path and says what is wrong.
class CheckpointError : public Error {
 public:
  explicit CheckpointError(const std::string& m) : Error(ErrorCode::checkpoint, m) {}
};

/// Throws the Error subclass that matches `code`, with `message`. (Not for out_of_range, which
/// needs its id and position: it becomes a plain Error with that code.)
[[noreturn]] void throw_error(ErrorCode code, const std::string& message);

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream stream;
  (stream << ... << args);
  return stream.str();
}

/// "[a, b, c]": a shape or a list of ranks, as messages show them.
template <typename Values>
std::string bracketed(const Values& values) {
  std::ostringstream stream;
  stream << "[";
  bool first = true;
  for (const auto& value : values) {
    stream << (first ? "" : ", ") << value;
    first = false;
  }
  stream << "]";
  return stream.str();
}
}  // namespace detail

}  // namespace tpembed

/// Precondition check: throws `ErrorType` with the streamed message parts when `cond` is false.
/// Example: TPEMBED_EXPECTS(rank < size, InvalidArgumentError, "tp_rank ", rank, " >= ", size);
#define TPEMBED_EXPECTS(cond, ErrorType, ...)                          \
  do {                                                                 \
    if (!(cond)) throw ErrorType(::tpembed::detail::concat(__VA_ARGS__)); \
  } while (0)
