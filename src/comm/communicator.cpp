// The engine-independent half of Communicator: argument checks, group validation for split(),
// agreement on errors across ranks, and the node-local device choice of one-process-per-GPU runs.
#include "tpembed/communicator.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>

#include "tpembed/cuda.hpp"

namespace tpembed {

namespace {

bool reducible(DType dtype) {
  return is_float(dtype) || dtype == DType::i32 || dtype == DType::i64;
}

void check_buffers(const char* what, const void* send, const void* recv, std::int64_t count,
                   DType dtype) {
  TPEMBED_EXPECTS(count >= 0, InvalidArgumentError, what, ": count ", count, " is negative");
  TPEMBED_EXPECTS(count == 0 || (send != nullptr && recv != nullptr), InvalidArgumentError, what,
                  ": null buffer with count ", count);
  TPEMBED_EXPECTS(dtype != DType::i4, InvalidArgumentError, what,
                  ": i4 has no whole elements; move bytes as i8");
}

// Where each rank's block starts (the sum of the counts before it), after checking that there is
// one count per rank, none is negative and the blocks of `unit`-byte elements add up to a byte
// count that fits in int64. `counts_name` is plural ("counts", "send counts"). Sets `total`.
std::vector<std::int64_t> block_starts(const char* what, const char* counts_name,
                                       const std::vector<std::int64_t>& counts, int ranks,
                                       std::int64_t unit, std::int64_t& total) {
  const std::string plural = counts_name;
  const std::string singular = plural.substr(0, plural.size() - 1);
  TPEMBED_EXPECTS(static_cast<int>(counts.size()) == ranks, InvalidArgumentError, what, ": ",
                  counts.size(), " ", plural, " for a communicator of ", ranks, " ranks");
  std::vector<std::int64_t> starts(counts.size(), 0);
  total = 0;
  for (std::size_t r = 0; r < counts.size(); ++r) {
    TPEMBED_EXPECTS(counts[r] >= 0, InvalidArgumentError, what, ": ", singular, " ", counts[r],
                    " for rank ", r, " is negative");
    TPEMBED_EXPECTS(counts[r] <= std::numeric_limits<std::int64_t>::max() / unit - total,
                    InvalidArgumentError, what, ": the ", plural,
                    " add up to more bytes than int64 counts");
    starts[r] = total;
    total += counts[r];
  }
  return starts;
}

bool overlaps(const void* a, std::int64_t a_bytes, const void* b, std::int64_t b_bytes) {
  const auto begin_a = reinterpret_cast<std::uintptr_t>(a);
  const auto begin_b = reinterpret_cast<std::uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && begin_a < begin_b + static_cast<std::uintptr_t>(b_bytes) &&
         begin_b < begin_a + static_cast<std::uintptr_t>(a_bytes);
}

// The same verdict on every rank: every rank runs this over the same gathered lists.
std::string check_groups(const std::vector<std::vector<std::int64_t>>& groups) {
  const std::int64_t size = static_cast<std::int64_t>(groups.size());
  for (std::int64_t rank = 0; rank < size; ++rank) {
    const auto& group = groups[rank];
    if (group.empty()) return detail::concat("rank ", rank, " passed an empty group");
    std::vector<std::int64_t> sorted = group;
    std::sort(sorted.begin(), sorted.end());
    if (sorted.front() < 0 || sorted.back() >= size) {
      return detail::concat("rank ", rank, " passed group ", detail::bracketed(group),
                            " with a rank outside [0, ", size, ")");
    }
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
      return detail::concat("rank ", rank, " passed group ", detail::bracketed(group),
                            " that names a rank twice");
    }
    if (!std::binary_search(sorted.begin(), sorted.end(), rank)) {
      return detail::concat("rank ", rank, " passed group ", detail::bracketed(group),
                            " that does not contain itself");
    }
    for (std::int64_t member : group) {
      if (groups[member] != group) {
        return detail::concat("rank ", rank, " passed group ", detail::bracketed(group), " but rank ",
                              member, " passed ", detail::bracketed(groups[member]),
                              ": groups must be disjoint and every member must pass the same list");
      }
    }
  }
  return {};
}

// One fixed-size record per rank for agree_or_throw, followed by the caller's facts (the same
// number of bytes on every rank).
struct ErrorRecord {
  std::int32_t failed;
  std::int32_t code;
  std::int64_t first_bad_id, position, count;
  char message[992];
};
static_assert(sizeof(ErrorRecord) == 1024, "ErrorRecord is exchanged as raw bytes");

void describe_error(std::exception_ptr local_error, ErrorRecord& mine) {
  mine.failed = 1;
  try {
    std::rethrow_exception(local_error);
  } catch (const OutOfRangeError& error) {
    mine.code = static_cast<std::int32_t>(error.code());
    mine.first_bad_id = error.first_bad_id();
    mine.position = error.position();
    mine.count = error.count();
    std::strncpy(mine.message, error.what(), sizeof mine.message - 1);
  } catch (const Error& error) {
    mine.code = static_cast<std::int32_t>(error.code());
    std::strncpy(mine.message, error.what(), sizeof mine.message - 1);
  } catch (const std::exception& error) {
    mine.code = static_cast<std::int32_t>(ErrorCode::backend);
    std::strncpy(mine.message, error.what(), sizeof mine.message - 1);
  } catch (...) {
    mine.code = static_cast<std::int32_t>(ErrorCode::backend);
    std::strncpy(mine.message, "unknown exception", sizeof mine.message - 1);
  }
}

// Throws the agreed error when any of the gathered records failed.
void throw_if_any_failed(const std::vector<const ErrorRecord*>& all) {
  // Group ranks that failed with the same message, keeping the order of their first appearance.
  std::vector<std::pair<std::string, std::vector<int>>> reasons;
  const ErrorRecord* first = nullptr;
  for (std::size_t r = 0; r < all.size(); ++r) {
    if (!all[r]->failed) continue;
    if (first == nullptr) first = all[r];
    const std::string text(all[r]->message, strnlen(all[r]->message, sizeof all[r]->message));
    auto it = std::find_if(reasons.begin(), reasons.end(),
                           [&](const auto& reason) { return reason.first == text; });
    if (it == reasons.end()) {
      reasons.push_back({text, {static_cast<int>(r)}});
    } else {
      it->second.push_back(static_cast<int>(r));
    }
  }
  if (first == nullptr) return;

  std::ostringstream message;
  for (std::size_t i = 0; i < reasons.size(); ++i) {
    const auto& ranks = reasons[i].second;
    message << (i ? "; " : "") << (ranks.size() > 1 ? "ranks " : "rank ");
    for (std::size_t k = 0; k < ranks.size(); ++k) message << (k ? "," : "") << ranks[k];
    message << ": " << reasons[i].first;
  }
  const auto code = static_cast<ErrorCode>(first->code);
  if (code == ErrorCode::out_of_range) {
    throw OutOfRangeError(message.str(), first->first_bad_id, first->position, first->count);
  }
  throw_error(code, message.str());
}

}  // namespace

void Communicator::all_reduce_sum(const void* send, void* recv, std::int64_t count, DType dtype,
                                  void* stream) {
  check_buffers("all_reduce_sum", send, recv, count, dtype);
  TPEMBED_EXPECTS(reducible(dtype), InvalidArgumentError, "all_reduce_sum: cannot sum ",
                  dtype_name(dtype), " (supported: f32, f16, bf16, i32, i64)");
  if (count == 0) return;
  do_all_reduce_sum(send, recv, count, dtype, stream);
}

void Communicator::all_gather(const void* send, void* recv, std::int64_t count, DType dtype,
                              void* stream) {
  check_buffers("all_gather", send, recv, count, dtype);
  if (count == 0) return;
  do_all_gather(send, recv, count * static_cast<std::int64_t>(element_size(dtype)), stream);
}

void Communicator::all_gather_v(const void* send, void* recv,
                                const std::vector<std::int64_t>& byte_counts, void* stream) {
  std::int64_t total = 0;
  const std::vector<std::int64_t> displacements =
      block_starts("all_gather_v", "counts", byte_counts, size(), 1, total);
  TPEMBED_EXPECTS(total == 0 || recv != nullptr, InvalidArgumentError, "all_gather_v: null receive buffer for ",
                  total, " bytes");
  TPEMBED_EXPECTS(byte_counts[static_cast<std::size_t>(rank())] == 0 || send != nullptr, InvalidArgumentError,
                  "all_gather_v: null send buffer for ", byte_counts[static_cast<std::size_t>(rank())], " bytes");
  if (total == 0) return;
  do_all_gather_v(send, recv, byte_counts, displacements, stream);
}

void Communicator::do_all_gather_v(const void* send, void* recv, const std::vector<std::int64_t>& byte_counts,
                                   const std::vector<std::int64_t>& displacements, void* stream) {
  const std::int64_t widest = *std::max_element(byte_counts.begin(), byte_counts.end());
  std::vector<std::uint8_t> padded(static_cast<std::size_t>(widest * size()));
  std::uint8_t* own = padded.data() + rank() * widest;
  const std::int64_t mine = byte_counts[static_cast<std::size_t>(rank())];
  if (mine > 0) std::memcpy(own, send, static_cast<std::size_t>(mine));
  do_all_gather(own, padded.data(), widest, stream);
  auto* out = static_cast<std::uint8_t*>(recv);
  for (int r = 0; r < size(); ++r) {
    const std::int64_t count = byte_counts[static_cast<std::size_t>(r)];
    if (count > 0) std::memmove(out + displacements[static_cast<std::size_t>(r)], padded.data() + r * widest,
                                static_cast<std::size_t>(count));
  }
}

void Communicator::reduce_scatter_sum(const void* send, void* recv,
                                      const std::vector<std::int64_t>& counts, DType dtype,
                                      void* stream) {
  TPEMBED_EXPECTS(dtype != DType::i4, InvalidArgumentError,
                  "reduce_scatter_sum: i4 has no whole elements; move bytes as i8");
  TPEMBED_EXPECTS(reducible(dtype), InvalidArgumentError, "reduce_scatter_sum: cannot sum ",
                  dtype_name(dtype), " (supported: f32, f16, bf16, i32, i64)");
  const auto element = static_cast<std::int64_t>(element_size(dtype));
  std::int64_t total = 0;
  const std::vector<std::int64_t> displacements =
      block_starts("reduce_scatter_sum", "counts", counts, size(), element, total);
  const auto me = static_cast<std::size_t>(rank());
  TPEMBED_EXPECTS(total == 0 || send != nullptr, InvalidArgumentError,
                  "reduce_scatter_sum: null send buffer for ", total, " elements");
  TPEMBED_EXPECTS(counts[me] == 0 || recv != nullptr, InvalidArgumentError,
                  "reduce_scatter_sum: null receive buffer for this rank's ", counts[me],
                  " elements");
  const void* own_block = static_cast<const std::uint8_t*>(send) + displacements[me] * element;
  TPEMBED_EXPECTS(recv == own_block || !overlaps(send, total * element, recv, counts[me] * element),
                  InvalidArgumentError, "reduce_scatter_sum: recv overlaps send but is not rank ",
                  me, "'s block of it (in place, recv is send + ", displacements[me], " elements)");
  if (total == 0) return;
  do_reduce_scatter_sum(send, recv, counts, displacements, dtype, stream);
}

void Communicator::do_reduce_scatter_sum(const void* send, void* recv,
                                         const std::vector<std::int64_t>& counts,
                                         const std::vector<std::int64_t>& displacements,
                                         DType dtype, void* stream) {
  const auto element = static_cast<std::int64_t>(element_size(dtype));
  const std::int64_t total = displacements.back() + counts.back();
  std::vector<std::uint8_t> sums(static_cast<std::size_t>(total * element));
  do_all_reduce_sum(send, sums.data(), total, dtype, stream);
  const auto me = static_cast<std::size_t>(rank());
  if (counts[me] > 0) {
    std::memcpy(recv, sums.data() + displacements[me] * element,
                static_cast<std::size_t>(counts[me] * element));
  }
}

void Communicator::all_to_all_v(const void* send, const std::vector<std::int64_t>& send_bytes,
                                void* recv, const std::vector<std::int64_t>& recv_bytes,
                                void* stream) {
  std::int64_t send_total = 0, recv_total = 0;
  const std::vector<std::int64_t> send_displacements =
      block_starts("all_to_all_v", "send counts", send_bytes, size(), 1, send_total);
  const std::vector<std::int64_t> recv_displacements =
      block_starts("all_to_all_v", "receive counts", recv_bytes, size(), 1, recv_total);
  const auto me = static_cast<std::size_t>(rank());
  TPEMBED_EXPECTS(send_bytes[me] == recv_bytes[me], InvalidArgumentError, "all_to_all_v: rank ", me,
                  " sends itself ", send_bytes[me], " bytes but expects ", recv_bytes[me],
                  " from itself (send_bytes[", me, "] must equal recv_bytes[", me, "])");
  TPEMBED_EXPECTS(send_total == 0 || send != nullptr, InvalidArgumentError,
                  "all_to_all_v: null send buffer for ", send_total, " bytes");
  TPEMBED_EXPECTS(recv_total == 0 || recv != nullptr, InvalidArgumentError,
                  "all_to_all_v: null receive buffer for ", recv_total, " bytes");
  TPEMBED_EXPECTS(!overlaps(send, send_total, recv, recv_total), InvalidArgumentError,
                  "all_to_all_v: send (", send_total, " bytes) and recv (", recv_total,
                  " bytes) overlap; the exchange has no in-place form");
  do_all_to_all_v(send, send_bytes, send_displacements, recv, recv_bytes, recv_displacements,
                  stream);
}

void Communicator::do_all_to_all_v(const void* send, const std::vector<std::int64_t>& send_bytes,
                                   const std::vector<std::int64_t>& /*send_displacements*/,
                                   void* recv, const std::vector<std::int64_t>& recv_bytes,
                                   const std::vector<std::int64_t>& recv_displacements,
                                   void* stream) {
  const int ranks = size();
  const auto width = static_cast<std::size_t>(ranks);
  // Row r of `counts`: rank r's send counts, then its receive counts.
  std::vector<std::int64_t> mine(2 * width), counts(2 * width * width);
  std::copy(send_bytes.begin(), send_bytes.end(), mine.begin());
  std::copy(recv_bytes.begin(), recv_bytes.end(), mine.begin() + ranks);
  do_all_gather(mine.data(), counts.data(),
                static_cast<std::int64_t>(2 * width * sizeof(std::int64_t)), stream);
  auto sent = [&](int from, int to) { return counts[2 * width * from + to]; };
  auto expected = [&](int at, int from) { return counts[2 * width * at + width + from]; };
  // Every rank checks every pair of the same table, so every rank reaches the same verdict.
  for (int from = 0; from < ranks; ++from) {
    for (int to = 0; to < ranks; ++to) {
      if (sent(from, to) != expected(to, from)) {
        throw CommunicatorError(detail::concat(
            "all_to_all_v: rank ", from, " sends ", sent(from, to), " bytes to rank ", to,
            ", which expects ", expected(to, from), " from it (send_bytes[", to, "] on rank ", from,
            " must equal recv_bytes[", from, "] on rank ", to, ")"));
      }
    }
  }
  // Every rank's whole send buffer to every rank; each keeps the blocks addressed to it.
  std::vector<std::int64_t> send_totals(width, 0), starts(width, 0);
  std::int64_t everything = 0;
  for (int from = 0; from < ranks; ++from) {
    for (int to = 0; to < ranks; ++to) send_totals[from] += sent(from, to);
    starts[from] = everything;
    everything += send_totals[from];
  }
  if (everything == 0) return;
  std::vector<std::uint8_t> gathered(static_cast<std::size_t>(everything));
  do_all_gather_v(send, gathered.data(), send_totals, starts, stream);
  const int me = rank();
  auto* out = static_cast<std::uint8_t*>(recv);
  for (int from = 0; from < ranks; ++from) {
    std::int64_t offset = starts[from];
    for (int to = 0; to < me; ++to) offset += sent(from, to);
    const std::int64_t bytes = recv_bytes[static_cast<std::size_t>(from)];
    if (bytes > 0) {
      std::memcpy(out + recv_displacements[static_cast<std::size_t>(from)],
                  gathered.data() + offset, static_cast<std::size_t>(bytes));
    }
  }
}

std::unique_ptr<Communicator> Communicator::split(const std::vector<int>& group) {
  const int ranks = size();
  std::int64_t length = static_cast<std::int64_t>(group.size());
  std::vector<std::int64_t> lengths(ranks);
  all_gather(&length, lengths.data(), 1, DType::i64);
  const std::int64_t longest = *std::max_element(lengths.begin(), lengths.end());

  std::vector<std::int64_t> mine(longest, -1), all(static_cast<std::size_t>(longest) * ranks);
  std::copy(group.begin(), group.end(), mine.begin());
  all_gather(mine.data(), all.data(), longest, DType::i64);

  std::vector<std::vector<std::int64_t>> groups(ranks);
  for (int r = 0; r < ranks; ++r) {
    groups[r].assign(all.begin() + r * longest, all.begin() + r * longest + lengths[r]);
  }
  const std::string problem = check_groups(groups);
  if (!problem.empty()) throw CommunicatorError("split: " + problem);

  const auto& own = groups[rank()];
  const int color = static_cast<int>(*std::min_element(own.begin(), own.end()));
  const int key = static_cast<int>(std::find(own.begin(), own.end(), rank()) - own.begin());
  return do_split(color, key);
}

void agree_or_throw(Communicator& comm, const std::optional<Error>& local_error) {
  agree_or_throw(comm, local_error ? std::make_exception_ptr(*local_error) : nullptr);
}

void agree_or_throw(Communicator& comm, std::exception_ptr local_error) {
  agree_or_throw(comm, local_error, nullptr, 0, nullptr);
}

void agree_or_throw(Communicator& comm, std::exception_ptr local_error, const void* facts,
                    std::size_t fact_bytes, void* all_facts) {
  TPEMBED_EXPECTS(fact_bytes == 0 || (facts != nullptr && all_facts != nullptr), InvalidArgumentError,
                  "agree_or_throw: null facts buffer for ", fact_bytes, " bytes");
  // Records padded to 8 bytes so that each rank's facts stay aligned for the caller's struct.
  const std::size_t padded = (fact_bytes + 7) / 8 * 8;
  const std::size_t record_bytes = sizeof(ErrorRecord) + padded;
  const std::size_t ranks = static_cast<std::size_t>(comm.size());
  std::vector<std::uint64_t> mine(record_bytes / 8, 0), gathered(record_bytes / 8 * ranks);
  auto* own = reinterpret_cast<ErrorRecord*>(mine.data());
  if (local_error) describe_error(local_error, *own);
  if (fact_bytes > 0) std::memcpy(own + 1, facts, fact_bytes);
  comm.all_gather(mine.data(), gathered.data(), static_cast<std::int64_t>(record_bytes), DType::i8);

  std::vector<const ErrorRecord*> all(ranks);
  for (std::size_t r = 0; r < ranks; ++r) {
    all[r] = reinterpret_cast<const ErrorRecord*>(gathered.data() + r * record_bytes / 8);
  }
  throw_if_any_failed(all);
  for (std::size_t r = 0; fact_bytes > 0 && r < ranks; ++r) {
    std::memcpy(static_cast<std::uint8_t*>(all_facts) + r * fact_bytes, all[r] + 1, fact_bytes);
  }
}

int node_local_cuda_device(const Communicator& comm) {
  const int devices = cuda_device_count();
  TPEMBED_EXPECTS(devices > 0, UnsupportedError, "rank ", comm.rank(),
                  ": no CUDA device visible (one device per process of a node was asked for)");
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  return (local != nullptr ? std::atoi(local) : comm.rank()) % devices;
}

}  // namespace tpembed
