// Which row body the CPU lookup runs: the CPU's features, the TPEMBED_CPU_ISA cap, the tests'
// switch.
#include "cpu/decode_rows.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "tpembed/error.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace tpembed::cpu {

namespace {

CpuIsa detect_cpu_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  // libgcc's checks include the OS's support for the wider registers (XGETBV).
  __builtin_cpu_init();
  // Clang's __builtin_cpu_supports does not know "f16c": CPUID leaf 1 (ECX) says.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
  const bool avx2 = __builtin_cpu_supports("avx2") && f16c;
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
  if (avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi") &&
      __builtin_cpu_supports("avx512bf16")) {
    return CpuIsa::avx512bf16;
  }
  if (avx512) return CpuIsa::avx512;
  if (avx2) return CpuIsa::avx2;
#endif
  return CpuIsa::portable;
}

CpuIsa capped(CpuIsa isa) {
  const CpuIsa best = best_cpu_isa();
  return static_cast<int>(isa) < static_cast<int>(best) ? isa : best;
}

CpuIsa isa_from_environment() {
  const char* requested = std::getenv("TPEMBED_CPU_ISA");
  if (requested == nullptr || *requested == '\0') return best_cpu_isa();
  return capped(cpu_isa_from_name(requested));
}

constexpr int kUnset = -1;
std::atomic<int> active_isa{kUnset};

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx2:
      return "avx2";
    case CpuIsa::avx512:
      return "avx512";
    case CpuIsa::avx512bf16:
      return "avx512bf16";
    default:
      return "portable";
  }
}

CpuIsa cpu_isa_from_name(const char* name) {
  for (CpuIsa isa : {CpuIsa::portable, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::avx512bf16}) {
    if (std::strcmp(name, cpu_isa_name(isa)) == 0) return isa;
  }
  throw InvalidArgumentError(tpembed::detail::concat(
      "TPEMBED_CPU_ISA: '", name, "' is not portable, avx2, avx512 or avx512bf16"));
}

CpuIsa best_cpu_isa() {
  static const CpuIsa best = detect_cpu_isa();
  return best;
}

CpuIsa active_cpu_isa() {
  int isa = active_isa.load(std::memory_order_relaxed);
  if (isa == kUnset) {
    // Several threads may get here first; they all compute the same value.
    isa = static_cast<int>(isa_from_environment());
    active_isa.store(isa, std::memory_order_relaxed);
  }
  return static_cast<CpuIsa>(isa);
}

CpuIsa set_active_cpu_isa(CpuIsa isa) {
  const CpuIsa previous = active_cpu_isa();
  active_isa.store(static_cast<int>(capped(isa)), std::memory_order_relaxed);
  return previous;
}

RowBody row_body(CpuIsa isa, DType table, DType out, bool scaled) {
  // Each level falls back to the one below for the pairs it has no body of its own for.
  RowBody body;
  if (isa == CpuIsa::avx512bf16) body = avx512bf16_row_body(table, out, scaled);
  if (body.run == nullptr && static_cast<int>(isa) >= static_cast<int>(CpuIsa::avx512)) {
    body = avx512_row_body(table, out, scaled);
  }
  if (body.run == nullptr && static_cast<int>(isa) >= static_cast<int>(CpuIsa::avx2)) {
    body = avx2_row_body(table, out, scaled);
  }
  if (body.run == nullptr) body = portable_row_body(table, out, scaled);
  return body;
}

}  // namespace tpembed::cpu
