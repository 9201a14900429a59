#include "ledger/signing.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "keys.h"

namespace gpuledger::ledger {

namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

std::string BioContents(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read key file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Digest PublicKeyId(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  GPULEDGER_ASSERT(len > 0, "cannot encode public key");
  Digest id = Sha256(std::string_view(reinterpret_cast<const char*>(der), len));
  OPENSSL_free(der);
  return id;
}

absl::Status CheckEd25519(EVP_PKEY* key, absl::string_view what) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not an Ed25519 key"));
  }
  return absl::OkStatus();
}

}  // namespace

struct Signer::Impl {
  PkeyPtr key;
};

Signer::Signer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Signer::~Signer() = default;

absl::StatusOr<std::unique_ptr<Signer>> Signer::Generate() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (key == nullptr) return absl::InternalError("Ed25519 key generation failed");
  auto impl = std::make_unique<Impl>();
  impl->key.reset(key);
  return std::unique_ptr<Signer>(new Signer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Signer>> Signer::FromPrivateKeyPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return absl::InvalidArgumentError("not a PEM private key");
  if (auto st = CheckEd25519(key.get(), "the signing key"); !st.ok()) return st;
  auto impl = std::make_unique<Impl>();
  impl->key = std::move(key);
  return std::unique_ptr<Signer>(new Signer(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Signer>> Signer::FromPrivateKeyFile(const std::string& path) {
  auto pem = ReadFile(path);
  if (!pem.ok()) return pem.status();
  auto signer = FromPrivateKeyPem(*pem);
  if (!signer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", signer.status().message()));
  }
  return signer;
}

std::string Signer::Sign(std::string_view message) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  GPULEDGER_ASSERT(ctx != nullptr, "EVP_MD_CTX_new");
  GPULEDGER_ASSERT(EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, impl_->key.get()) == 1,
                   "Ed25519 sign init");
  std::string sig(64, '\0');
  size_t len = sig.size();
  GPULEDGER_ASSERT(
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1,
      "Ed25519 sign");
  EVP_MD_CTX_free(ctx);
  sig.resize(len);
  return sig;
}

std::string Signer::PrivateKeyPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  GPULEDGER_ASSERT(PEM_write_bio_PrivateKey(bio.get(), impl_->key.get(), nullptr, nullptr, 0,
                                            nullptr, nullptr) == 1,
                   "write private key");
  return BioContents(bio.get());
}

std::string Signer::PublicKeyPem() const {
  BioPtr bio(BIO_new(BIO_s_mem()));
  GPULEDGER_ASSERT(PEM_write_bio_PUBKEY(bio.get(), impl_->key.get()) == 1, "write public key");
  return BioContents(bio.get());
}

Digest Signer::KeyId() const { return PublicKeyId(impl_->key.get()); }

struct SignatureVerifier::Impl {
  PkeyPtr key;
};

SignatureVerifier::SignatureVerifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SignatureVerifier::~SignatureVerifier() = default;

absl::StatusOr<std::unique_ptr<SignatureVerifier>> SignatureVerifier::FromPublicKeyPem(
    std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return absl::InvalidArgumentError("not a PEM public key");
  if (auto st = CheckEd25519(key.get(), "the public key"); !st.ok()) return st;
  auto impl = std::make_unique<Impl>();
  impl->key = std::move(key);
  return std::unique_ptr<SignatureVerifier>(new SignatureVerifier(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<SignatureVerifier>> SignatureVerifier::FromPublicKeyFile(
    const std::string& path) {
  auto pem = ReadFile(path);
  if (!pem.ok()) return pem.status();
  auto v = FromPublicKeyPem(*pem);
  if (!v.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", v.status().message()));
  return v;
}

bool SignatureVerifier::Verify(std::string_view message, std::string_view signature) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  GPULEDGER_ASSERT(ctx != nullptr, "EVP_MD_CTX_new");
  bool ok = EVP_DigestVerifyInit(ctx, nullptr, nullptr, nullptr, impl_->key.get()) == 1 &&
            EVP_DigestVerify(
                ctx, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

Digest SignatureVerifier::KeyId() const { return PublicKeyId(impl_->key.get()); }

namespace {

std::string SignedFields(std::string m, const gpuledger::v1::Checkpoint& c) {
  m.push_back('\0');
  keys::PutBe64(&m, c.seq());
  keys::PutBe64(&m, static_cast<uint64_t>(c.time_ms()));
  keys::PutBe64(&m, c.interval());
  m.append(c.head_hash());
  return m;
}

}  // namespace

std::string CheckpointMessage(const gpuledger::v1::Checkpoint& c) {
  return SignedFields("gpuledger-checkpoint/1", c);
}

std::string KeyRotationMessage(const gpuledger::v1::Checkpoint& rotation,
                               const Digest& next_key_id) {
  std::string m = SignedFields("gpuledger-key-rotation/1", rotation);
  m.append(ToBytes(next_key_id));
  return m;
}

void SignKeyRotation(const Signer& old, const Signer& next, gpuledger::v1::Checkpoint* rotation) {
  rotation->set_next_public_key_pem(next.PublicKeyPem());
  rotation->set_key_id(ToBytes(old.KeyId()));
  rotation->set_signature(old.Sign(KeyRotationMessage(*rotation, next.KeyId())));
}

void SignCheckpoint(const Signer& signer, gpuledger::v1::Checkpoint* checkpoint) {
  checkpoint->set_key_id(ToBytes(signer.KeyId()));
  checkpoint->set_signature(signer.Sign(CheckpointMessage(*checkpoint)));
}

}  // namespace gpuledger::ledger
