// Hashing and randomness (OpenSSL libcrypto).
#ifndef FORGE_COMMON_CRYPTO_H_
#define FORGE_COMMON_CRYPTO_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace forge {

// Lower-case hex SHA-256 of `data`.
std::string Sha256Hex(absl::string_view data);

// `n` bytes from the OS CSPRNG. Fails only if the CSPRNG cannot be seeded.
absl::StatusOr<std::string> SecureRandomBytes(size_t n);

// Lower-case hex of arbitrary bytes.
std::string HexEncode(absl::string_view bytes);

// Unpadded base64url (RFC 4648 §5) of arbitrary bytes.
std::string Base64UrlEncode(absl::string_view bytes);

// Constant-time equality for secrets of equal length (false if lengths differ).
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace forge

#endif  // FORGE_COMMON_CRYPTO_H_
