// Every bound of the API in one place (STYLE.md, "Limits in one place"), with its reason.
// Options a person may change are in ServerOptions (server.h); these are fixed.
#pragma once

#include <chrono>
#include <cstddef>

namespace gpuledger::api {

// A page of a list (ledger entries, rejected events, checkpoints, producer gaps) stops once its
// serialized items reach this many bytes, and says where to continue: a page of 100 entries of
// 1 MB payloads was 132 MB and made serve allocate 600 MB more. At least one item is always
// returned, so a page is at most this plus one item (an entry is at most a Kafka message, whose
// payload appears twice: base64 and decoded).
inline constexpr size_t kPageBytesMax = 4 << 20;

// One answer that is not paged (a settlement document, a list of a period's documents, one
// ledger entry, a page of the UI) is at most this many bytes by default (serve
// --max-response-bytes). Beyond, it is refused with 422 `response_too_large` and what to ask for
// instead, rather than built and sent whole: the field limits bound a document's lines, but not
// their number. The export streams and is not bounded.
inline constexpr size_t kResponseBytesMax = 64 << 20;

// Connections being refused at once (each gets a 503; over TLS after a handshake of up to
// ServerOptions::handshake_timeout_s). Beyond: closed without an answer, so that refusing costs
// a bounded number of file descriptors.
inline constexpr size_t kRefusingConnectionsMax = 64;

// When accept() fails for want of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), the accept loop
// waits this long before trying again, doubling up to the max, instead of spinning on a
// connection it cannot take.
inline constexpr std::chrono::milliseconds kAcceptBackoffMin{50};
inline constexpr std::chrono::milliseconds kAcceptBackoffMax{1000};
// At most one log line per this interval about accept() failing.
inline constexpr std::chrono::seconds kAcceptErrorLogEvery{10};

// Tokens file: bigger files are not read (a reload then revokes every token, loudly); longer
// lines grant nothing.
inline constexpr size_t kTokensFileBytesMax = 1 << 20;
inline constexpr size_t kTokensLineBytesMax = 1024;

}  // namespace gpuledger::api
