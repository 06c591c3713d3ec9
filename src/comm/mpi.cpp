// The MPI engine: host collectives over a private duplicate of MPI_COMM_WORLD (or of a split of
// it), so our traffic never matches messages of the application that hosts us.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "tpembed/communicator.hpp"
#include "tpembed/numeric.hpp"

namespace tpembed {

namespace {

std::string mpi_error_string(int status) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(status, text, &length) != MPI_SUCCESS) {
    return detail::concat("unknown MPI error ", status);
  }
  return std::string(text, static_cast<std::size_t>(length));
}

// Rank in MPI_COMM_WORLD for error messages; -1 when MPI is not running.
int world_rank_or_unknown() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  int rank = -1;
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

[[noreturn]] void throw_mpi_error(int status, const char* call, const char* file, int line) {
  throw BackendError(detail::concat("rank ", world_rank_or_unknown(), ": ", call, " failed: ",
                                    mpi_error_string(status), " (", file, ":", line, ")"));
}

}  // namespace

}  // namespace tpembed

/// Runs an MPI call and throws tpembed::BackendError naming the call, the MPI error, the world rank
/// and file:line when it does not return MPI_SUCCESS. Communicators we own use MPI_ERRORS_RETURN,
/// so their failures come back here instead of aborting the job.
#define TPEMBED_MPI_TRY(call)                                                     \
  do {                                                                            \
    const int tpembed_mpi_status_ = (call);                                       \
    if (tpembed_mpi_status_ != MPI_SUCCESS) {                                     \
      ::tpembed::throw_mpi_error(tpembed_mpi_status_, #call, __FILE__, __LINE__); \
    }                                                                             \
  } while (0)

namespace tpembed {

namespace {

// Largest element count handed to one MPI call (MPI counts are int).
constexpr std::int64_t kMaxCount = INT_MAX;
// Block size of the derived datatype that carries all-gathers above kMaxCount bytes.
constexpr std::int64_t kChunkBytes = std::int64_t{1} << 30;

bool is_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

// A collective after MPI_Finalize would abort the process (no error handler applies then): a
// clear error instead, e.g. for a layer destroyed at interpreter exit after mpi4py finalised MPI.
void expect_not_finalized(const char* what) {
  if (is_finalized()) {
    throw CommunicatorError(detail::concat(what, " on an MPI communicator after MPI_Finalize"));
  }
}

// ---- f16 / bf16 sums: summed in f32, rounded once per reduction step
// -----------------------------

// out[i] = a[i] + b[i] in `dtype` (f16/bf16: in f32, rounded once; integers wrap); `out` may be `a`.
void add(void* out, const void* a, const void* b, std::int64_t count, DType dtype) {
  const auto each = [&](auto* into, auto sum) {
    using T = std::remove_pointer_t<decltype(into)>;
    const auto* x = static_cast<const T*>(a);
    const auto* y = static_cast<const T*>(b);
    for (std::int64_t i = 0; i < count; ++i) into[i] = sum(x[i], y[i]);
  };
  switch (dtype) {
    case DType::f32:
      return each(static_cast<float*>(out), [](float x, float y) { return x + y; });
    case DType::i32:
      return each(static_cast<std::uint32_t*>(out), [](std::uint32_t x, std::uint32_t y) { return x + y; });
    case DType::i64:
      return each(static_cast<std::uint64_t*>(out), [](std::uint64_t x, std::uint64_t y) { return x + y; });
    case DType::f16:
      return each(static_cast<std::uint16_t*>(out), [](std::uint16_t x, std::uint16_t y) {
        return f32_to_f16_bits(f16_bits_to_f32(x) + f16_bits_to_f32(y));
      });
    case DType::bf16:
      return each(static_cast<std::uint16_t*>(out), [](std::uint16_t x, std::uint16_t y) {
        return f32_to_bf16_bits(bf16_bits_to_f32(x) + bf16_bits_to_f32(y));
      });
    default:
      throw InvalidArgumentError(detail::concat("the MPI engine cannot sum ", dtype_name(dtype)));
  }
}

template <DType dtype>
void sum_half(void* in, void* inout, int* len, MPI_Datatype*) {
  add(inout, inout, in, *len, dtype);
}

struct HalfSumOps {
  MPI_Op f16 = MPI_OP_NULL;
  MPI_Op bf16 = MPI_OP_NULL;
  bool registered = false;
};

// Called by MPI_Finalize, which deletes MPI_COMM_SELF's attributes first: the ops are freed while
// MPI still runs, whoever finalises it.
int free_half_sum_ops(MPI_Comm, int, void* attribute, void*) {
  auto* ops = static_cast<HalfSumOps*>(attribute);
  if (ops->f16 != MPI_OP_NULL) MPI_Op_free(&ops->f16);
  if (ops->bf16 != MPI_OP_NULL) MPI_Op_free(&ops->bf16);
  ops->registered = false;
  return MPI_SUCCESS;
}

// The two ops, created once per process on first use (MPI is used from one thread: "funneled").
const HalfSumOps& half_sum_ops() {
  static HalfSumOps ops;
  if (ops.f16 == MPI_OP_NULL) {
    TPEMBED_MPI_TRY(MPI_Op_create(&sum_half<DType::f16>, 1, &ops.f16));
  }
  if (ops.bf16 == MPI_OP_NULL) {
    TPEMBED_MPI_TRY(MPI_Op_create(&sum_half<DType::bf16>, 1, &ops.bf16));
  }
  if (!ops.registered) {
    int keyval = MPI_KEYVAL_INVALID;
    TPEMBED_MPI_TRY(
        MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, free_half_sum_ops, &keyval, nullptr));
    TPEMBED_MPI_TRY(MPI_Comm_set_attr(MPI_COMM_SELF, keyval, &ops));
    // The attribute keeps the key alive until MPI_Finalize deletes it.
    TPEMBED_MPI_TRY(MPI_Comm_free_keyval(&keyval));
    ops.registered = true;
  }
  return ops;
}

// ---- all-gather of more than INT_MAX bytes
// --------------------------------------------------------

// A committed datatype of exactly `bytes` bytes (extent included), built from 1 GiB blocks and a
// remainder, freed when the owner goes.
class BigBytesType {
 public:
  explicit BigBytesType(std::int64_t bytes) {
    const std::int64_t chunks = bytes / kChunkBytes;
    const std::int64_t remainder = bytes % kChunkBytes;
    MPI_Datatype chunk = MPI_DATATYPE_NULL, chunks_type = MPI_DATATYPE_NULL,
                 joined = MPI_DATATYPE_NULL;
    try {
      TPEMBED_MPI_TRY(MPI_Type_contiguous(static_cast<int>(kChunkBytes), MPI_BYTE, &chunk));
      TPEMBED_MPI_TRY(MPI_Type_contiguous(static_cast<int>(chunks), chunk, &chunks_type));
      if (remainder == 0) {
        std::swap(joined, chunks_type);
      } else {
        int lengths[2] = {1, static_cast<int>(remainder)};
        MPI_Aint displacements[2] = {0, static_cast<MPI_Aint>(chunks * kChunkBytes)};
        MPI_Datatype types[2] = {chunks_type, MPI_BYTE};
        TPEMBED_MPI_TRY(MPI_Type_create_struct(2, lengths, displacements, types, &joined));
      }
      TPEMBED_MPI_TRY(MPI_Type_create_resized(joined, 0, static_cast<MPI_Aint>(bytes), &type_));
      TPEMBED_MPI_TRY(MPI_Type_commit(&type_));
    } catch (...) {
      release(type_);
      release(joined);
      release(chunks_type);
      release(chunk);
      throw;
    }
    release(joined);
    release(chunks_type);
    release(chunk);
  }
  ~BigBytesType() { release(type_); }
  BigBytesType(const BigBytesType&) = delete;
  BigBytesType& operator=(const BigBytesType&) = delete;

  MPI_Datatype get() const { return type_; }

 private:
  static void release(MPI_Datatype& type) {
    if (type != MPI_DATATYPE_NULL) MPI_Type_free(&type);
  }
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

// ---- the messages of an all-to-all
// ----------------------------------------------------------------------

// The tag of all_to_all_v's messages (the engine's own communicator carries nothing else point to
// point).
constexpr int kExchangeTag = 7;

// One message of `bytes` bytes: plain bytes where MPI's int count reaches, else one element of a
// datatype of exactly that many bytes.
class Message {
 public:
  explicit Message(std::int64_t bytes) : bytes_(bytes) {
    if (bytes > kMaxCount) big_ = std::make_unique<BigBytesType>(bytes);
  }
  int count() const { return big_ ? 1 : static_cast<int>(bytes_); }
  MPI_Datatype type() const { return big_ ? big_->get() : MPI_BYTE; }

 private:
  std::int64_t bytes_;
  std::unique_ptr<BigBytesType> big_;
};

// ---- waiting with a deadline
// --------------------------------------------------------------------------

// Collectives of up to this many bytes are non-blocking, waited for against the timeout, in the
// engine's own buffer (a late peer can never write into the caller's memory after a timeout).
// Larger ones block: MPI's blocking algorithms move large blocks about a third faster here.
constexpr std::int64_t kOwnBufferBytes = 256 * 1024;
// All-gathers of records up to this size a rank (every agreement: set-up, the forward's check, its
// error messages) are always waited for against the timeout, however many ranks there are.
constexpr std::int64_t kRecordBytes = 4096;

double timeout_from(const MpiOptions& options) {
  double seconds = 300.0;
  std::string source = "MpiOptions::timeout_seconds";
  if (options.timeout_seconds) {
    seconds = *options.timeout_seconds;
  } else if (const char* text = std::getenv("TPEMBED_COMM_TIMEOUT_SECONDS");
             text != nullptr && *text != '\0') {
    char* end = nullptr;
    seconds = std::strtod(text, &end);
    source = detail::concat("TPEMBED_COMM_TIMEOUT_SECONDS='", text, "'");
    if (end == text || *end != '\0') seconds = -1;
  }
  TPEMBED_EXPECTS(std::isfinite(seconds) && seconds > 0, InvalidArgumentError, source,
                  " must be a positive number of seconds, got ", seconds);
  return seconds;
}

// The pauses between the polls of a wait. MPI progresses only inside MPI calls, so polls are back
// to back: for the first 200 us without a break (a peer that has arrived completes the call within
// that; yielding at once costs a scheduler slice where another process wants the core), then
// yielding the CPU (to ranks of an oversubscribed node that we wait for), and after a second, when
// a peer is late, 1 ms apart.
class Poller {
 public:
  explicit Poller(double timeout_seconds) : start_(Clock::now()), limit_(timeout_seconds) {}
  /// Pauses before the next poll; false (at once) when the wait has reached its limit.
  bool pause() const {
    const auto waited = Clock::now() - start_;
    if (waited >= limit_) return false;
    if (waited < std::chrono::microseconds(200)) return true;
    if (waited < std::chrono::seconds(1)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
  std::chrono::duration<double> limit_;
};

// Polls `requests` until all complete (true) or `timeout_seconds` pass (false).
bool wait_for(int count, MPI_Request* requests, double timeout_seconds) {
  const Poller poller(timeout_seconds);
  for (;;) {
    int done = 0;
    TPEMBED_MPI_TRY(MPI_Testall(count, requests, &done, MPI_STATUSES_IGNORE));
    if (done) return true;
    if (!poller.pause()) return false;
  }
}

bool wait_for(MPI_Request& request, double timeout_seconds) {
  return wait_for(1, &request, timeout_seconds);
}

// Buffers that a timed-out collective may still write: kept until the process ends.
void keep_forever(std::vector<std::uint8_t>&& buffer) {
  static auto* kept = new std::vector<std::vector<std::uint8_t>>();  // never freed, on purpose
  kept->push_back(std::move(buffer));
}

// A duplicate of `given` (collective over it), waited for against the timeout.
MPI_Comm duplicate(MPI_Comm given, double timeout_seconds) {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Request request = MPI_REQUEST_NULL;
  TPEMBED_MPI_TRY(MPI_Comm_idup(given, &comm, &request));
  if (!wait_for(request, timeout_seconds)) {
    int size = 0;
    MPI_Comm_size(given, &size);
    throw CommunicatorError(detail::concat(
        "make_mpi_communicator: duplicating the MPI communicator (collective over its ", size,
        " ranks) did not complete within ", timeout_seconds,
        " s: some rank did not make a communicator from the same MPI communicator at the same "
        "time"));
  }
  return comm;
}

bool overlaps(const void* a, std::int64_t a_bytes, const void* b, std::int64_t b_bytes) {
  const auto begin_a = reinterpret_cast<std::uintptr_t>(a);
  const auto begin_b = reinterpret_cast<std::uintptr_t>(b);
  return begin_a < begin_b + static_cast<std::uintptr_t>(b_bytes) &&
         begin_b < begin_a + static_cast<std::uintptr_t>(a_bytes);
}

// The MPI datatype and sum of `dtype`: f16 and bf16 travel as 16-bit words and are summed by our
// ops (in f32, rounded once per step).
struct Summation {
  MPI_Datatype type;
  MPI_Op op;
};

Summation summation(DType dtype, const char* what) {
  switch (dtype) {
    case DType::f32:
      return {MPI_FLOAT, MPI_SUM};
    case DType::i32:
      return {MPI_INT32_T, MPI_SUM};
    case DType::i64:
      return {MPI_INT64_T, MPI_SUM};
    case DType::f16:
      return {MPI_UINT16_T, half_sum_ops().f16};
    case DType::bf16:
      return {MPI_UINT16_T, half_sum_ops().bf16};
    default:
      throw InvalidArgumentError(
          detail::concat(what, ": the MPI engine cannot sum ", dtype_name(dtype)));
  }
}

// ---- the engine
// -----------------------------------------------------------------------------------

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm`.
  MpiCommunicator(MPI_Comm comm, double timeout_seconds)
      : comm_(comm), timeout_seconds_(timeout_seconds) {
    try {
      TPEMBED_MPI_TRY(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
      TPEMBED_MPI_TRY(MPI_Comm_rank(comm_, &rank_));
      TPEMBED_MPI_TRY(MPI_Comm_size(comm_, &size_));
    } catch (...) {
      MPI_Comm_free(&comm_);
      throw;
    }
  }
  ~MpiCommunicator() override {
    // After MPI_Finalize the handle is gone with the rest of MPI's state; after a timeout a
    // collective is still pending on it, so it is left alone.
    if (comm_ != MPI_COMM_NULL && !is_finalized() && timed_out_in_.empty()) MPI_Comm_free(&comm_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string engine() const override { return "mpi"; }

 protected:
  void do_all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype,
                         void*) override {
    expect_usable("all_reduce_sum");
    const auto [type, op] = summation(dtype, "all_reduce_sum");
    const auto element = static_cast<std::int64_t>(element_size(dtype));
    const std::int64_t bytes = count * element;
    if (bytes <= kOwnBufferBytes) {
      stage_.resize(static_cast<std::size_t>(bytes));
      std::memcpy(stage_.data(), send, static_cast<std::size_t>(bytes));
      MPI_Request request = MPI_REQUEST_NULL;
      TPEMBED_MPI_TRY(MPI_Iallreduce(MPI_IN_PLACE, stage_.data(), static_cast<int>(count), type, op,
                                     comm_, &request));
      wait(request, "all_reduce_sum");
      std::memcpy(recv, stage_.data(), static_cast<std::size_t>(bytes));
      return;
    }
    // MPI forbids aliased buffers: a partial overlap becomes an in-place reduction.
    if (send != recv && overlaps(send, bytes, recv, bytes)) {
      std::memmove(recv, send, static_cast<std::size_t>(bytes));
      send = recv;
    }
    const bool in_place = send == recv;
    for (std::int64_t done = 0; done < count; done += kMaxCount) {
      const int part = static_cast<int>(std::min(kMaxCount, count - done));
      const void* source =
          in_place ? MPI_IN_PLACE : static_cast<const char*>(send) + done * element;
      void* target = static_cast<char*>(recv) + done * element;
      TPEMBED_MPI_TRY(MPI_Allreduce(source, target, part, type, op, comm_));
    }
  }

  void do_all_gather(const void* send, void* recv, std::int64_t bytes_per_rank, void*) override {
    expect_usable("all_gather");
    const std::int64_t total = bytes_per_rank * static_cast<std::int64_t>(size_);
    MPI_Request request = MPI_REQUEST_NULL;
    if (total <= kOwnBufferBytes || bytes_per_rank <= kRecordBytes) {
      stage_.resize(static_cast<std::size_t>(total));
      std::memcpy(stage_.data() + rank_ * bytes_per_rank, send,
                  static_cast<std::size_t>(bytes_per_rank));
      const int bytes = static_cast<int>(bytes_per_rank);
      TPEMBED_MPI_TRY(MPI_Iallgather(MPI_IN_PLACE, bytes, MPI_BYTE, stage_.data(), bytes, MPI_BYTE,
                                     comm_, &request));
      wait(request, "all_gather");
      std::memcpy(recv, stage_.data(), static_cast<std::size_t>(total));
      return;
    }
    char* own_block = static_cast<char*>(recv) + rank_ * bytes_per_rank;
    // In place when `send` is this rank's block; any other overlap with `recv` is copied there
    // first, since MPI forbids aliased buffers.
    if (send != own_block && overlaps(send, bytes_per_rank, recv, total)) {
      std::memmove(own_block, send, static_cast<std::size_t>(bytes_per_rank));
      send = own_block;
    }
    const void* source = send == own_block ? MPI_IN_PLACE : send;
    if (bytes_per_rank <= kMaxCount) {
      const int bytes = static_cast<int>(bytes_per_rank);
      TPEMBED_MPI_TRY(MPI_Allgather(source, bytes, MPI_BYTE, recv, bytes, MPI_BYTE, comm_));
      return;
    }
    const BigBytesType block(bytes_per_rank);
    TPEMBED_MPI_TRY(MPI_Allgather(source, 1, block.get(), recv, 1, block.get(), comm_));
  }

  void do_barrier() override {
    expect_usable("barrier");
    MPI_Request request = MPI_REQUEST_NULL;
    TPEMBED_MPI_TRY(MPI_Ibarrier(comm_, &request));
    wait(request, "barrier");
  }

  void do_all_gather_v(const void* send, void* recv, const std::vector<std::int64_t>& byte_counts,
                       const std::vector<std::int64_t>& displacements, void* stream) override {
    expect_usable("all_gather_v");
    const std::int64_t total = displacements.back() + byte_counts.back();
    if (total > kMaxCount) {  // MPI's int counts: the padded all-gather handles the large case
      Communicator::do_all_gather_v(send, recv, byte_counts, displacements, stream);
      return;
    }
    std::vector<int> counts(byte_counts.begin(), byte_counts.end());
    std::vector<int> displs(displacements.begin(), displacements.end());
    const auto me = static_cast<std::size_t>(rank_);
    MPI_Request request = MPI_REQUEST_NULL;
    if (total <= kOwnBufferBytes) {
      stage_.resize(static_cast<std::size_t>(total));
      if (counts[me] > 0)
        std::memcpy(stage_.data() + displs[me], send, static_cast<std::size_t>(counts[me]));
      TPEMBED_MPI_TRY(MPI_Iallgatherv(MPI_IN_PLACE, counts[me], MPI_BYTE, stage_.data(),
                                      counts.data(), displs.data(), MPI_BYTE, comm_, &request));
      wait(request, "all_gather_v");
      std::memcpy(recv, stage_.data(), static_cast<std::size_t>(total));
      return;
    }
    // In place when `send` already sits at this rank's place in `recv` (MPI forbids aliasing).
    const bool in_place = send == static_cast<const char*>(recv) + displs[me];
    const void* source = in_place ? MPI_IN_PLACE : counts[me] == 0 ? recv : send;
    TPEMBED_MPI_TRY(MPI_Allgatherv(source, counts[me], MPI_BYTE, recv, counts.data(), displs.data(),
                                   MPI_BYTE, comm_));
  }

  // Each rank's block travels straight to its owner (all_to_all_v below: (size-1)/size of the
  // vector leaves each rank, as in a ring), and the owner adds the blocks it receives in rank order,
  // rounded once per step as all_reduce_sum. Not MPI_Reduce_scatter: Open MPI 4.1 ran it (with the
  // f16/bf16 ops, on one host) at half the speed of the whole all-reduce.
  void do_reduce_scatter_sum(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                             const std::vector<std::int64_t>& displacements, DType dtype,
                             void*) override {
    expect_usable("reduce_scatter_sum");  // (the base class refused what cannot be summed)
    const auto element = static_cast<std::int64_t>(element_size(dtype));
    const auto ranks = static_cast<std::size_t>(size_);
    const std::int64_t own = counts[static_cast<std::size_t>(rank_)];
    std::vector<std::int64_t> send_bytes(ranks), send_displacements(ranks), recv_bytes(ranks, own * element),
        recv_displacements(ranks);
    for (std::size_t r = 0; r < ranks; ++r) {
      send_bytes[r] = counts[r] * element;
      send_displacements[r] = displacements[r] * element;
      recv_displacements[r] = static_cast<std::int64_t>(r) * own * element;
    }
    gathered_.resize(static_cast<std::size_t>(own * element) * ranks);
    exchange(send, send_bytes, send_displacements, gathered_.data(), recv_bytes, recv_displacements,
             "reduce_scatter_sum", "every rank must pass the same counts");
    if (own == 0) return;
    // `send` is read no more: `recv` (which may be this rank's block of it) takes the sum.
    if (ranks == 1) std::memcpy(recv, gathered_.data(), static_cast<std::size_t>(own * element));
    for (std::size_t r = 1; r < ranks; ++r) {
      add(recv, r == 1 ? gathered_.data() : recv, gathered_.data() + recv_displacements[r], own, dtype);
    }
  }

  // Point to point, one message for each ordered pair of ranks, empty ones too. Not MPI_Alltoallv:
  // its int counts and displacements stop at 2 GiB, and whether a call passes that is known only to
  // the ranks whose blocks do, while every rank must make the same collective call; and in Open MPI
  // a block longer than its receiver expects is written past the end of the receive buffer (and
  // its non-blocking alltoalls report it through MPI_COMM_WORLD's handler, which aborts the job).
  // Here every message is probed before it is received: one of the expected length lands in its
  // block, one of another length in a buffer of its own, and the receiver reports it once all
  // messages are in, so the communicator stays in step (every call sends exactly one message a
  // pair, so calls never take each other's messages). A rank that moves up to kOwnBufferBytes works
  // in its own buffer and waits against the timeout; the others wait in the caller's buffers
  // without one (which ranks do which need not agree).
  void do_all_to_all_v(const void* send, const std::vector<std::int64_t>& send_bytes,
                       const std::vector<std::int64_t>& send_displacements, void* recv,
                       const std::vector<std::int64_t>& recv_bytes,
                       const std::vector<std::int64_t>& recv_displacements, void*) override {
    expect_usable("all_to_all_v");
    exchange(send, send_bytes, send_displacements, recv, recv_bytes, recv_displacements, "all_to_all_v",
             nullptr);
  }

  std::unique_ptr<Communicator> do_split(int color, int key) override {
    expect_usable("split");
    MPI_Comm group = MPI_COMM_NULL;
    TPEMBED_MPI_TRY(MPI_Comm_split(comm_, color, key, &group));
    return std::make_unique<MpiCommunicator>(group, timeout_seconds_);
  }

 private:
  // all_to_all_v's exchange (described above it); `what` names the collective in its errors and
  // `mismatch` says what a block of another length means (nullptr: all_to_all_v's own rule).
  void exchange(const void* send, const std::vector<std::int64_t>& send_bytes,
                const std::vector<std::int64_t>& send_displacements, void* recv,
                const std::vector<std::int64_t>& recv_bytes,
                const std::vector<std::int64_t>& recv_displacements, const char* what,
                const char* mismatch) {
    const std::int64_t send_total = send_displacements.back() + send_bytes.back();
    const std::int64_t recv_total = recv_displacements.back() + recv_bytes.back();
    const bool staged = send_total + recv_total <= kOwnBufferBytes;
    std::uint8_t nothing = 0;  // a valid address for no bytes
    const auto* from = send_total > 0 ? static_cast<const std::uint8_t*>(send) : &nothing;
    auto* into = recv_total > 0 ? static_cast<std::uint8_t*>(recv) : &nothing;
    if (staged) {
      stage_.resize(static_cast<std::size_t>(send_total + recv_total));
      if (send_total > 0)
        from = static_cast<const std::uint8_t*>(
            std::memcpy(stage_.data(), send, static_cast<std::size_t>(send_total)));
      if (recv_total > 0) into = stage_.data() + send_total;
    }
    const auto ranks = static_cast<std::size_t>(size_), me = static_cast<std::size_t>(rank_);
    if (send_bytes[me] > 0) {
      std::memcpy(into + recv_displacements[me], from + send_displacements[me],
                  static_cast<std::size_t>(send_bytes[me]));
    }
    std::vector<Message> messages;
    std::vector<MPI_Request> requests;
    messages.reserve(2 * ranks);
    requests.reserve(2 * ranks);
    for (std::size_t step = 1; step < ranks; ++step) {
      const std::size_t peer = (me + step) % ranks;
      messages.emplace_back(send_bytes[peer]);
      requests.push_back(MPI_REQUEST_NULL);
      TPEMBED_MPI_TRY(MPI_Isend(from + send_displacements[peer], messages.back().count(),
                                messages.back().type(), static_cast<int>(peer), kExchangeTag, comm_,
                                &requests.back()));
    }
    std::vector<bool> arrived(ranks, false);
    arrived[me] = true;
    std::size_t waiting = ranks - 1;
    std::vector<std::pair<std::size_t, MPI_Count>> wrong;  // (peer, bytes it sent) of wrong lengths
    std::vector<std::vector<std::uint8_t>> discarded;      // where their bytes land
    const Poller poller(staged ? timeout_seconds_ : std::numeric_limits<double>::infinity());
    while (waiting > 0) {
      for (std::size_t peer = 0; peer < ranks; ++peer) {
        if (arrived[peer]) continue;
        int found = 0;
        MPI_Message message = MPI_MESSAGE_NULL;
        MPI_Status status;
        TPEMBED_MPI_TRY(
            MPI_Improbe(static_cast<int>(peer), kExchangeTag, comm_, &found, &message, &status));
        if (!found) continue;
        MPI_Count bytes = 0;
        TPEMBED_MPI_TRY(MPI_Get_elements_x(&status, MPI_BYTE, &bytes));
        void* target = into + recv_displacements[peer];
        if (bytes != recv_bytes[peer]) {
          wrong.emplace_back(peer, bytes);
          discarded.emplace_back(static_cast<std::size_t>(bytes));
          target = bytes > 0 ? discarded.back().data() : &nothing;
        }
        messages.emplace_back(bytes);
        requests.push_back(MPI_REQUEST_NULL);
        TPEMBED_MPI_TRY(MPI_Imrecv(target, messages.back().count(), messages.back().type(),
                                   &message, &requests.back()));
        arrived[peer] = true;
        --waiting;
      }
      if (waiting > 0 && !poller.pause()) time_out(what, std::move(discarded));
    }
    const int count = static_cast<int>(requests.size());
    if (!staged) {
      TPEMBED_MPI_TRY(MPI_Waitall(count, requests.data(), MPI_STATUSES_IGNORE));
    } else if (!wait_for(count, requests.data(), timeout_seconds_)) {
      time_out(what, std::move(discarded));
    }
    if (!wrong.empty()) {
      const std::size_t peer = wrong.front().first;
      throw CommunicatorError(detail::concat(
          "rank ", rank_, " of ", size_, ": ", what, ": rank ", peer, " sent this rank ",
          wrong.front().second, " bytes, not the ", recv_bytes[peer],
          " it expects from it (",
          mismatch == nullptr
              ? detail::concat("recv_bytes[", peer, "] here must equal send_bytes[", rank_, "] on rank ", peer)
              : std::string(mismatch),
          ")",
          wrong.size() > 1 ? detail::concat("; ", wrong.size() - 1, " more blocks too") : ""));
    }
    if (staged && recv_total > 0) std::memcpy(recv, into, static_cast<std::size_t>(recv_total));
  }

  void expect_usable(const char* what) const {
    expect_not_finalized(what);
    if (!timed_out_in_.empty()) {
      throw CommunicatorError(
          detail::concat(what, " on an MPI communicator that timed out in ", timed_out_in_,
                         " earlier: it can no longer be used (its ranks are out of step)"));
    }
  }

  void wait(MPI_Request& request, const char* what) {
    if (!wait_for(request, timeout_seconds_)) time_out(what);
  }

  // After a wait past the timeout: the communicator refuses further use, and the buffers the
  // pending call may still write (the engine's own, and `also_kept`) are kept until the process
  // ends.
  [[noreturn]] void time_out(const char* what,
                             std::vector<std::vector<std::uint8_t>>&& also_kept = {}) {
    timed_out_in_ = what;
    keep_forever(std::move(stage_));
    stage_ = {};
    for (auto& buffer : also_kept) keep_forever(std::move(buffer));
    throw CommunicatorError(detail::concat("rank ", rank_, " of ", size_, ": ", what,
                                           " on the MPI communicator did not complete within ",
                                           timeout_seconds_,
                                           " s: a rank of the communicator has not reached it (it "
                                           "failed, skipped the call or is in another "
                                           "collective); this communicator can no longer be used"));
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  double timeout_seconds_;
  int rank_ = 0;
  int size_ = 0;
  std::vector<std::uint8_t> stage_;  // buffer of the collectives up to kOwnBufferBytes
  std::vector<std::uint8_t> gathered_;  // the reduce-scatter's blocks from every rank
  std::string timed_out_in_;         // the collective that timed out, if one did
};

void finalize_at_exit() {
  if (!is_finalized()) MPI_Finalize();
}

}  // namespace

bool mpi_available() {
  return true;
}

std::unique_ptr<Communicator> make_mpi_communicator() {
  return make_mpi_communicator(MpiOptions{});
}

std::unique_ptr<Communicator> make_mpi_communicator(const MpiOptions& options) {
  const double timeout_seconds = timeout_from(options);
  int initialized = 0;
  TPEMBED_MPI_TRY(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    TPEMBED_MPI_TRY(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    // We started MPI, so we end it; an application that started it ends it itself.
    std::atexit(finalize_at_exit);
  } else if (is_finalized()) {
    throw CommunicatorError("make_mpi_communicator: MPI has already been finalized");
  }
  return std::make_unique<MpiCommunicator>(duplicate(MPI_COMM_WORLD, timeout_seconds),
                                           timeout_seconds);
}

std::unique_ptr<Communicator> make_mpi_communicator(const void* mpi_comm_address) {
  return make_mpi_communicator(mpi_comm_address, MpiOptions{});
}

std::unique_ptr<Communicator> make_mpi_communicator(const void* mpi_comm_address,
                                                    const MpiOptions& options) {
  TPEMBED_EXPECTS(mpi_comm_address != nullptr, InvalidArgumentError,
                  "make_mpi_communicator: null address of an MPI_Comm");
  const double timeout_seconds = timeout_from(options);
  int initialized = 0;
  TPEMBED_MPI_TRY(MPI_Initialized(&initialized));
  TPEMBED_EXPECTS(initialized && !is_finalized(), CommunicatorError,
                  "make_mpi_communicator: MPI must be initialised (and not finalised) by whoever "
                  "owns the MPI_Comm");
  const MPI_Comm given = *static_cast<const MPI_Comm*>(mpi_comm_address);
  TPEMBED_EXPECTS(given != MPI_COMM_NULL, InvalidArgumentError,
                  "make_mpi_communicator: the MPI_Comm is MPI_COMM_NULL");
  return std::make_unique<MpiCommunicator>(duplicate(given, timeout_seconds), timeout_seconds);
}

}  // namespace tpembed
