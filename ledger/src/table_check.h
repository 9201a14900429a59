// Diagnosis of damaged table files, for when the ledger already reads as inconsistent.
//
// RocksDB 7.8 does not always report a damaged block: a table whose index or properties block
// is damaged can read as holding fewer keys (or none) with an OK status, and neither
// DB::VerifyChecksum nor a fresh SstFileReader says so. What it cannot hide is the MANIFEST: it
// records every table file's smallest and largest key when the file is written, independently of
// the file's own blocks. So each table file is read on its own and held against that record; and
// every key a scan of the file finds must also be found by a point lookup through the database
// (the path that uses the filter and index blocks) unless an iterator over the whole column
// family does not find it either (a key deleted later: the ledger never deletes, a hand-edited
// ledger may). A table file on disk that the view leaves out must read whole (a crashed writer's
// leftover) or it is the damage.
#pragma once

#include <rocksdb/db.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace gpuledger::ledger {

// OK when every live table file reads whole: it opens, its checksums hold, its first and last
// keys are the ones its MANIFEST record names, and every key it holds is found by a lookup.
// DATA_LOSS names the first table file that does not, its column family, and what was seen.
// Reads every table file in full (plus one lookup per key): meant for diagnosis, after a cheaper
// check has already failed, not for every verification pass.
absl::Status DiagnoseTables(rocksdb::DB* db,
                            const std::vector<rocksdb::ColumnFamilyHandle*>& handles,
                            const std::string& ledger_path);

}  // namespace gpuledger::ledger
