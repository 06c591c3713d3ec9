// One communicator interface for the tensor-parallel group, with several engines (single rank,
// MPI; NCCL later). The op layer only ever talks to this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tpembed/dtype.hpp"
#include "tpembed/error.hpp"
#include "tpembed/tensor.hpp"

namespace tpembed {

/// A group of ranks that run collectives together.
///
/// Public calls check their arguments and then call the engine's `do_*` hook. Every collective must
/// be called by every rank of the communicator, in the same order, with the same count and dtype.
/// Buffers live on `device` (host memory for the CPU engines).
class Communicator {
 public:
  virtual ~Communicator() = default;

  /// This process's rank in the communicator, 0..size()-1.
  virtual int rank() const = 0;
  /// Number of ranks.
  virtual int size() const = 0;
  /// Engine name: "single", "mpi", ...
  virtual std::string engine() const = 0;
  /// True when collectives take CUDA device buffers directly (NCCL). Engines that return false get
  /// host buffers only; the op layer stages device data through host memory for them.
  virtual bool accepts_device_buffers() const { return false; }

  /// Element-wise sum over all ranks of `count` elements of `dtype` (f32, f16, bf16, i32, i64).
  /// `send == recv` reduces in place. f16 and bf16 are summed in f32 and rounded once per step.
  /// Engines that take device buffers queue the work on `stream` (a cudaStream_t); host engines
  /// ignore it.
  void all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype,
                      void* stream = nullptr);

  /// Gathers `count` elements of `dtype` from every rank: rank r's block lands at
  /// `recv + r * count` elements. `send` may point into `recv` at this rank's own block.
  void all_gather(const void* send, void* recv, std::int64_t count, DType dtype,
                  void* stream = nullptr);

  /// Gathers a different number of bytes from each rank: rank r's `byte_counts[r]` bytes land at
  /// `recv` + (the sum of the counts of ranks before r). Every rank passes the same counts and a
  /// `send` of its own count. Buffers of host-only engines are host memory; the NCCL engine takes
  /// device buffers on `stream`.
  void all_gather_v(const void* send, void* recv, const std::vector<std::int64_t>& byte_counts,
                    void* stream = nullptr);

  /// Element-wise sum over all ranks of `send` (the sum of `counts` elements of `dtype`),
  /// scattered: rank r receives in `recv` the `counts[r]` elements of the sum that start at the sum
  /// of the counts of the ranks before r. One count per rank, zeros allowed (fewer tokens than
  /// ranks give empty blocks); every rank passes the same counts, which is not checked (as
  /// all_reduce_sum's count is not: it would take another collective), so callers agree on them
  /// first. The scattered layout of `n` rows of `h` elements is torch.tensor_split's: the first
  /// `n % size` ranks get n / size + 1 rows, the others n / size, times h. Dtypes and rounding as
  /// all_reduce_sum. `recv` is either disjoint from `send` or exactly this rank's block of it (in
  /// place); either way only `recv` is written. Every rank calls it, whatever its own count. Host
  /// engines ignore `stream`; the NCCL engine queues the work on it (host buffers are staged).
  void reduce_scatter_sum(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                          DType dtype, void* stream = nullptr);

  /// Personalised exchange of bytes: this rank sends `send_bytes[p]` bytes to each rank p, the
  /// blocks lying one after another in `send` in rank order, and receives `recv_bytes[p]` bytes
  /// from each rank p into consecutive blocks of `recv` in rank order (its own block is a copy).
  /// One count per rank on both sides, zeros allowed; `send` and `recv` must not overlap (there
  /// is no in-place form). The counts must match pairwise: `send_bytes[p]` on rank r equals
  /// `recv_bytes[r]` on rank p. The one pair a rank sees alone, its block to itself, is checked
  /// (InvalidArgumentError); the others are not checked up front, as that would take another
  /// collective. When they do not match: the engines without their own exchange (the default
  /// below) see every rank's counts and throw the same CommunicatorError on every rank, before
  /// moving any data; the MPI engine's receiving rank of a block of another length throws
  /// CommunicatorError naming the sender and both lengths once the exchange is over (nothing is
  /// written past a block; the senders return normally and the communicator stays usable); the
  /// NCCL engine does not check them (NCCL leaves transfers of unequal sizes undefined; one that
  /// hangs ends when the timeout aborts the communicator). Every rank calls it, even one with
  /// nothing to send or receive. Host engines ignore `stream`; the NCCL engine queues the work on
  /// it (host buffers are staged) and refuses CUDA graph capture (the counts are planned on the
  /// host).
  void all_to_all_v(const void* send, const std::vector<std::int64_t>& send_bytes, void* recv,
                    const std::vector<std::int64_t>& recv_bytes, void* stream = nullptr);

  /// Waits until every rank has arrived.
  void barrier() { do_barrier(); }

  /// Splits into disjoint groups. Every rank passes the list of ranks (of this communicator) of
  /// the group it joins, in group order; the new communicator's rank is the position in that
  /// list. The lists are checked across all ranks (each rank in exactly one group, every member
  /// of a group passing the same list): a mismatch throws the same CommunicatorError on every
  /// rank.
  std::unique_ptr<Communicator> split(const std::vector<int>& group);

 protected:
  virtual void do_all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype,
                                 void* stream) = 0;
  virtual void do_all_gather(const void* send, void* recv, std::int64_t bytes_per_rank,
                             void* stream) = 0;
  virtual void do_barrier() = 0;
  /// Default: an all_gather of blocks padded to the largest count, then compacted (host memory).
  virtual void do_all_gather_v(const void* send, void* recv, const std::vector<std::int64_t>& byte_counts,
                               const std::vector<std::int64_t>& displacements, void* stream);
  /// `displacements[r]` (in elements) is where rank r's block starts in `send`. Default: an
  /// all-reduce of the whole of `send` into a temporary host buffer, then this rank's block copied
  /// to `recv` (host memory).
  virtual void do_reduce_scatter_sum(const void* send, void* recv,
                                     const std::vector<std::int64_t>& counts,
                                     const std::vector<std::int64_t>& displacements, DType dtype,
                                     void* stream);
  /// Displacements (in bytes) are where each rank's block starts in `send` and `recv`. Default:
  /// every rank's counts are all-gathered and checked pair by pair (a mismatch throws the same
  /// CommunicatorError on every rank), then every rank's whole `send` is all-gathered and each
  /// rank keeps the blocks sent to it (host memory; moves every byte to every rank).
  virtual void do_all_to_all_v(const void* send, const std::vector<std::int64_t>& send_bytes,
                               const std::vector<std::int64_t>& send_displacements, void* recv,
                               const std::vector<std::int64_t>& recv_bytes,
                               const std::vector<std::int64_t>& recv_displacements, void* stream);
  /// Ranks with the same `color` form a group, ordered by `key`.
  virtual std::unique_ptr<Communicator> do_split(int color, int key) = 0;
};

/// A communicator of one rank: collectives are copies.
std::unique_ptr<Communicator> make_single_communicator();

/// True when this build includes the MPI engine.
bool mpi_available();

/// Options of the MPI engine.
struct MpiOptions {
  /// Longest wait, in seconds, for a collective of up to 256 KiB (for all_to_all_v: the bytes this
  /// rank sends and receives) or an all-gather of up to 4 KiB a rank (every agreement, set-up and
  /// split, and the exchanges of small forwards) and for the duplicate made at creation: past it
  /// this rank throws CommunicatorError naming the call, and the communicator refuses every later
  /// collective (a peer that failed, skipped a call or passed another communicator cannot hang us).
  /// Those calls run in the engine's own buffers, so a late peer never writes into the caller's
  /// memory. Larger collectives block without a limit, as MPI's do (their non-blocking forms are
  /// slower): in a forward they follow the argument check, which has seen every rank arrive.
  /// Unset: the environment variable TPEMBED_COMM_TIMEOUT_SECONDS when set, else 300. The wait
  /// polls: for its first second it yields the CPU between polls, then sleeps 1 ms between them.
  std::optional<double> timeout_seconds;
};

/// A communicator over MPI_COMM_WORLD. Initialises MPI (thread level "funneled") when nobody has,
/// and then finalises it at process exit. Throws UnsupportedError when built without MPI.
std::unique_ptr<Communicator> make_mpi_communicator();
std::unique_ptr<Communicator> make_mpi_communicator(const MpiOptions& options);

/// A communicator over a duplicate (MPI_Comm_idup: collective over that communicator, waited for
/// against the timeout) of the MPI_Comm stored at `mpi_comm_address` (for example mpi4py's
/// `MPI._addressof(comm)`). MPI must already be initialised by its owner, who also finalises it.
/// Throws UnsupportedError when built without MPI.
std::unique_ptr<Communicator> make_mpi_communicator(const void* mpi_comm_address);
std::unique_ptr<Communicator> make_mpi_communicator(const void* mpi_comm_address, const MpiOptions& options);

/// Options of the NCCL engine.
struct NcclOptions {
  /// Longest wait, in seconds, for set-up, a split or a collective; past it the communicator is
  /// aborted and CommunicatorError is thrown on this rank (a dead or missing peer cannot hang us).
  double timeout_seconds = 300.0;
};

/// True when this build includes the NCCL engine (it needs the CUDA backend and NCCL).
bool nccl_available();

/// A new NCCL unique id (bytes of an ncclUniqueId): made by one rank, handed to all of the group.
std::vector<std::uint8_t> make_nccl_unique_id();

/// This rank's member of an NCCL communicator of `size` ranks on CUDA device `device`, from a
/// unique id every rank shares. For one process driving several GPUs, call it from one thread per
/// GPU. Collectives take device buffers on the caller's stream (host buffers are staged); outside
/// graph capture each waits for completion against the timeout. Sets NCCL_NVLS_ENABLE=0.
/// Members driven by threads of one process meet on the host before each eager collective, so no
/// member's collective kernel waits on the GPU while another thread is in a CUDA call that waits for
/// the GPUs (cudaFree, cudaHostAlloc, a pageable copy): allocating between collectives is safe. A
/// member that does not come within the timeout makes the others throw CommunicatorError.
std::unique_ptr<Communicator> make_nccl_communicator(const std::vector<std::uint8_t>& unique_id, int rank, int size,
                                                     int device, const NcclOptions& options = {});

/// The CUDA device of this rank when each process of a node takes one: its node-local rank (Open
/// MPI's OMPI_COMM_WORLD_LOCAL_RANK, else its rank in `comm`) modulo the visible devices. Throws
/// UnsupportedError when no device is visible.
int node_local_cuda_device(const Communicator& comm);

/// An NCCL communicator over the ranks of `bootstrap` (typically MPI under mpirun, one process per
/// GPU): rank 0 makes the unique id and `bootstrap` hands it out. `device` < 0 picks
/// node_local_cuda_device(bootstrap). Collective over `bootstrap`.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int device = -1,
                                                     const NcclOptions& options = {});

/// Collectives that another framework runs for tpembed over host memory: tpembed.torch runs them
/// over a torch.distributed process group (gloo), so that processes started by torchrun need no
/// MPI. Each is called by every rank in the same order and throws (any exception) when its
/// collective fails or times out; the engine then throws CommunicatorError with that reason and
/// refuses every later call (its ranks are out of step).
struct HostCollectives {
  int rank = 0;
  int size = 1;
  /// What engine() returns, e.g. "torch:gloo".
  std::string name = "host";
  /// Element-wise sum of `count` elements of `dtype` (f32, f16, bf16, i32, i64) into `recv`
  /// (`send == recv` in place). f16 and bf16 may be summed in f32 and rounded once.
  std::function<void(const void* send, void* recv, std::int64_t count, DType dtype)> all_reduce_sum;
  /// Rank r's `bytes_per_rank` bytes land at `recv + r * bytes_per_rank`.
  std::function<void(const void* send, void* recv, std::int64_t bytes_per_rank)> all_gather;
};

/// A communicator whose collectives are `collectives` (host buffers; the op layer stages device
/// data). barrier() is a one-byte all_gather. split() keeps the whole group (every rank naming all
/// ranks in order) or makes single-rank groups; any other split throws UnsupportedError on every
/// rank (make the framework's own sub-group and pass that). Throws InvalidArgumentError when a
/// callable is missing or rank/size do not fit.
std::unique_ptr<Communicator> make_host_communicator(HostCollectives collectives);

/// Makes every rank agree on whether a step succeeded, so a failure on one rank cannot leave the
/// others waiting in a collective. Each rank passes the error it hit (or nothing); when any rank
/// failed, every rank throws the same Error (the type of the lowest failing rank's error), whose
/// message names each failing rank and its reason. Collective: every rank must call it.
/// `local_error` is the exception this rank caught (null when it succeeded); a tpembed::Error keeps
/// its type (an OutOfRangeError its id and position), any other exception becomes a BackendError.
void agree_or_throw(Communicator& comm, std::exception_ptr local_error);

/// As above, and in the same collective gathers `fact_bytes` bytes of `facts` from every rank into
/// `all_facts` (rank r's at r * fact_bytes; every rank passes the same fact_bytes): one round trip
/// for an error check and the facts that ranks compare next. Throws before filling `all_facts`
/// when any rank failed.
void agree_or_throw(Communicator& comm, std::exception_ptr local_error, const void* facts,
                    std::size_t fact_bytes, void* all_facts);

/// As above, for an Error value (its dynamic type is not kept; its code is).
void agree_or_throw(Communicator& comm, const std::optional<Error>& local_error);

}  // namespace tpembed
