#include "ledger/hash.h"

#include <openssl/evp.h>

#include <cstring>
#include <memory>

#include "base/assert.h"

namespace gpuledger::ledger {

namespace {
// One EVP digest over several parts. EVP failures are only possible on allocation failure or
// a broken OpenSSL install, neither of which the ledger can continue through.
// SHA-256 fetched once (OpenSSL 3 looks an algorithm up in its provider store on every init
// otherwise), and one context per thread, reset by each init: a hash per token check was 8% of
// serving an invoice (docs/BENCHMARKS.md).
const EVP_MD* Sha256Md() {
  static const EVP_MD* const md = [] {
    const EVP_MD* fetched = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    GPULEDGER_ASSERT(fetched != nullptr, "SHA-256 is not available from OpenSSL");
    return fetched;
  }();
  return md;
}

struct ContextDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

Digest Sha256Parts(std::initializer_list<std::string_view> parts) {
  thread_local std::unique_ptr<EVP_MD_CTX, ContextDeleter> context(EVP_MD_CTX_new());
  EVP_MD_CTX* ctx = context.get();
  GPULEDGER_ASSERT(ctx != nullptr, "EVP_MD_CTX_new failed");
  GPULEDGER_ASSERT(EVP_DigestInit_ex(ctx, Sha256Md(), nullptr) == 1, "SHA-256 init failed");
  for (std::string_view part : parts) {
    GPULEDGER_ASSERT(EVP_DigestUpdate(ctx, part.data(), part.size()) == 1, "SHA-256 update");
  }
  Digest out{};
  unsigned int len = 0;
  GPULEDGER_ASSERT(EVP_DigestFinal_ex(ctx, out.data(), &len) == 1 && len == out.size(),
                   "SHA-256 final failed");
  return out;
}
}  // namespace

Digest Sha256(std::string_view data) { return Sha256Parts({data}); }

Digest ChainHash(const Digest& prev, uint64_t seq, std::string_view entry_bytes) {
  char seq_be[8];
  for (int i = 0; i < 8; ++i) seq_be[i] = static_cast<char>((seq >> (56 - 8 * i)) & 0xff);
  return Sha256Parts({std::string_view(reinterpret_cast<const char*>(prev.data()), prev.size()),
                      std::string_view(seq_be, 8), entry_bytes});
}

std::string ToHex(const Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (uint8_t b : digest) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xf]);
  }
  return out;
}

std::string ToBytes(const Digest& digest) {
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

bool FromBytes(std::string_view bytes, Digest* out) {
  if (bytes.size() != out->size()) return false;
  std::memcpy(out->data(), bytes.data(), out->size());
  return true;
}

}  // namespace gpuledger::ledger
