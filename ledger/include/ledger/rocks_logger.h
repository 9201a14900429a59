// RocksDB's informational log, sent to gpuledger's log (spdlog, stderr) instead of a LOG file in
// the database directory: on a full disk that file cannot be written either, and Debian's
// assertion-enabled RocksDB aborts the process when its error handler then tries to log the
// write failure to it. Only warnings and worse are passed on.
#pragma once

#include <memory>

namespace rocksdb {
class Logger;
}

namespace gpuledger::ledger {

// One shared instance; `what` names the store in each line ("ledger", "settlement store", ...).
std::shared_ptr<rocksdb::Logger> RocksLogger(const char* what);

}  // namespace gpuledger::ledger
