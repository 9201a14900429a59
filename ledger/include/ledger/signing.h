// Ed25519 keys for signed checkpoints (OpenSSL). The operator holds the private key; auditors
// need only the public key.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "gpuledger/v1/ledger.pb.h"
#include "ledger/hash.h"

namespace gpuledger::ledger {

// Immutable after creation; safe to share between threads.
class Signer {
 public:
  // A fresh random key pair.
  static absl::StatusOr<std::unique_ptr<Signer>> Generate();
  // Reads a PKCS#8 PEM Ed25519 private key.
  static absl::StatusOr<std::unique_ptr<Signer>> FromPrivateKeyPem(std::string_view pem);
  static absl::StatusOr<std::unique_ptr<Signer>> FromPrivateKeyFile(const std::string& path);
  ~Signer();

  std::string Sign(std::string_view message) const;
  std::string PrivateKeyPem() const;
  std::string PublicKeyPem() const;
  // SHA-256 of the DER public key.
  Digest KeyId() const;

 private:
  struct Impl;
  explicit Signer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Immutable after creation; safe to share between threads.
class SignatureVerifier {
 public:
  static absl::StatusOr<std::unique_ptr<SignatureVerifier>> FromPublicKeyPem(std::string_view pem);
  static absl::StatusOr<std::unique_ptr<SignatureVerifier>> FromPublicKeyFile(
      const std::string& path);
  ~SignatureVerifier();

  bool Verify(std::string_view message, std::string_view signature) const;
  Digest KeyId() const;

 private:
  struct Impl;
  explicit SignatureVerifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The exact bytes a checkpoint's signature covers.
std::string CheckpointMessage(const gpuledger::v1::Checkpoint& checkpoint);

// The exact bytes a key rotation record's signature covers: the checkpoint's fields as in
// CheckpointMessage, under "gpuledger-key-rotation/1", followed by the next key's id.
std::string KeyRotationMessage(const gpuledger::v1::Checkpoint& rotation,
                               const Digest& next_key_id);

// Fills key_id and signature of `checkpoint` (seq, head_hash, time_ms, interval already set).
void SignCheckpoint(const Signer& signer, gpuledger::v1::Checkpoint* checkpoint);

// Makes `rotation` (seq, head_hash, time_ms, interval already set) a key rotation record: names
// `next`'s public key and signs with `old`, the key being replaced.
void SignKeyRotation(const Signer& old, const Signer& next, gpuledger::v1::Checkpoint* rotation);

}  // namespace gpuledger::ledger
