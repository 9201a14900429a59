#include "table_check.h"

#include <rocksdb/metadata.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/table_properties.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"

namespace gpuledger::ledger {

namespace {

// The ledger's keys are binary (big-endian sequence numbers, length-prefixed ids): shown as hex,
// shortened.
std::string Show(const std::string& key) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < key.size() && i < 24; ++i) {
    out += kHex[static_cast<unsigned char>(key[i]) >> 4];
    out += kHex[static_cast<unsigned char>(key[i]) & 0xf];
  }
  if (key.size() > 24) out += "...";
  return out.empty() ? "(empty)" : out;
}

absl::Status Damaged(const std::string& ledger_path, const rocksdb::LiveFileMetaData& f,
                     const std::string& what) {
  return absl::DataLossError(absl::StrCat(
      "table file ", f.relative_filename, " (", f.column_family_name, ") of the ledger at ",
      ledger_path, " is damaged: ", what,
      ". RocksDB reads such a block as missing data without an error, so the ledger cannot be "
      "read as it is; restore it from a verified export or backup"));
}

// A table file on disk that the database's view does not list. RocksDB 7.8 leaves a table
// whose index or properties block is damaged out of a read-only view without an error (its
// entries then read as missing); a table a crashed writer left behind reads whole and is ignored.
absl::Status CheckUnlisted(rocksdb::DB* db, const std::string& dir, const std::string& name,
                           const std::string& ledger_path) {
  rocksdb::Options options(db->GetDBOptions(), rocksdb::ColumnFamilyOptions());
  rocksdb::SstFileReader reader(options);
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;
  rocksdb::Status s = reader.Open(absl::StrCat(dir, "/", name));
  if (s.ok()) s = reader.VerifyChecksum(ro);
  if (s.ok()) {
    std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(ro));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
    }
    s = it->status();
  }
  if (s.ok() && reader.GetTableProperties() == nullptr) {
    s = rocksdb::Status::Corruption("its properties block cannot be read");
  }
  if (s.ok()) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "table file ", name, " of the ledger at ", ledger_path,
      " is damaged, and RocksDB left it out of the ledger's view without an error, so its "
      "entries read as missing (",
      s.ToString(), "); restore the ledger from a verified export or backup"));
}

// A secondary instance (which is how the ledger is opened read-only) tolerates a table file it
// cannot load, since its primary may have deleted it; a plain read-only open loads every table
// the MANIFEST names and fails on a damaged one (a damaged filter or properties block among
// them, which a table reader opened on its own accepts). Table files the view leaves out are
// held to that: when a plain open fails on them, they are the damage; when it succeeds, they
// are leftovers of a crashed writer and do not matter.
absl::Status OpenAsPrimaryWould(rocksdb::DB* db,
                                const std::vector<rocksdb::ColumnFamilyHandle*>& handles,
                                const std::vector<std::string>& unlisted,
                                const std::string& ledger_path) {
  rocksdb::DBOptions db_options = db->GetDBOptions();
  db_options.max_open_files = -1;  // load every table at open
  db_options.paranoid_checks = true;
  std::vector<std::string> names;
  rocksdb::Status s = rocksdb::DB::ListColumnFamilies(db_options, ledger_path, &names);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const std::string& name : names) {
    rocksdb::ColumnFamilyOptions cf_options;
    for (auto* h : handles) {
      if (h != nullptr && h->GetName() == name) cf_options = db->GetOptions(h);
    }
    descriptors.emplace_back(name, cf_options);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> opened;
  rocksdb::DB* plain = nullptr;
  if (s.ok())
    s = rocksdb::DB::OpenForReadOnly(db_options, ledger_path, descriptors, &opened, &plain);
  if (plain != nullptr) {
    for (auto* h : opened) plain->DestroyColumnFamilyHandle(h);
    delete plain;
  }
  if (s.ok() || !(s.IsCorruption() || s.IsIOError())) return absl::OkStatus();
  std::string files;
  for (const std::string& name : unlisted) absl::StrAppend(&files, files.empty() ? "" : ", ", name);
  return absl::DataLossError(absl::StrCat(
      "a table file of the ledger at ", ledger_path, " is damaged (", s.ToString(),
      "); the read-only view left out ", files,
      " without an error, so its entries read as missing. Restore the ledger from a verified "
      "export or backup"));
}

// Whether an iterator over the whole column family finds `key`. An iterator in total order
// reads no filter, so it finds a key whose lookup a damaged filter misses; a key deleted after
// it was written (the ledger never does, a hand-edited one might) it does not find either.
bool ScanFinds(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf, const rocksdb::Slice& key) {
  rocksdb::ReadOptions ro;
  ro.total_order_seek = true;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, cf));
  it->Seek(key);
  return it->Valid() && it->key() == key;
}

absl::Status CheckOne(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
                      const rocksdb::LiveFileMetaData& f, const std::string& ledger_path) {
  const std::string file = absl::StrCat(f.directory, "/", f.relative_filename);
  rocksdb::Options options(db->GetDBOptions(), db->GetOptions(cf));
  rocksdb::SstFileReader reader(options);
  if (rocksdb::Status s = reader.Open(file); !s.ok()) {
    return Damaged(ledger_path, f, absl::StrCat("it cannot be opened (", s.ToString(), ")"));
  }
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  ro.fill_cache = false;
  if (rocksdb::Status s = reader.VerifyChecksum(ro); !s.ok()) {
    return Damaged(ledger_path, f, absl::StrCat("a block checksum fails (", s.ToString(), ")"));
  }
  std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(ro));
  uint64_t keys = 0;
  std::string first;
  std::string last;
  rocksdb::ReadOptions lookup;
  lookup.verify_checksums = true;
  lookup.fill_cache = false;
  std::string value;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (keys == 0) first = it->key().ToString();
    last = it->key().ToString();
    ++keys;
    // The ledger never deletes: a key in a live table is always found by a lookup, unless a
    // filter or index block on the lookup's path is damaged.
    rocksdb::Status s = db->Get(lookup, cf, it->key(), &value);
    if (s.IsNotFound() && !ScanFinds(db, cf, it->key())) continue;  // deleted later (by hand)
    if (s.IsNotFound()) {
      return Damaged(ledger_path, f,
                     absl::StrCat("a scan of the file finds key ", Show(last),
                                  " but a lookup misses it (its filter or index block is "
                                  "damaged)"));
    }
    if (!s.ok()) {
      return Damaged(ledger_path, f,
                     absl::StrCat("a lookup of key ", Show(last), " fails (", s.ToString(), ")"));
    }
  }
  if (!it->status().ok()) {
    return Damaged(
        ledger_path, f,
        absl::StrCat("reading it stops after ", keys, " keys (", it->status().ToString(), ")"));
  }
  // The MANIFEST's record of the file was written with it and does not depend on its blocks.
  // A reader hides deletion markers, which the record counts: a table holding any (the ledger
  // never deletes; a hand-edited ledger may) is not held to its record's key range.
  std::shared_ptr<const rocksdb::TableProperties> props = reader.GetTableProperties();
  const bool has_deletions =
      props != nullptr && (props->num_deletions != 0 || props->num_range_deletions != 0);
  if (!has_deletions && (keys == 0 || first != f.smallestkey || last != f.largestkey)) {
    return Damaged(
        ledger_path, f,
        absl::StrCat(
            "its MANIFEST record says it holds keys ", Show(f.smallestkey), " to ",
            Show(f.largestkey), ", but reading it gives ", keys,
            keys == 0 ? " keys" : absl::StrCat(" keys, ", Show(first), " to ", Show(last))));
  }
  if (props != nullptr && props->num_entries != 0 && props->num_entries < keys) {
    return Damaged(ledger_path, f,
                   absl::StrCat("its properties say ", props->num_entries,
                                " entries, but reading it gives ", keys));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status DiagnoseTables(rocksdb::DB* db,
                            const std::vector<rocksdb::ColumnFamilyHandle*>& handles,
                            const std::string& ledger_path) {
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name;
  for (auto* h : handles) {
    if (h != nullptr) by_name[h->GetName()] = h;
  }
  // No flush or compaction while the files are listed and read: one would add table files after
  // the listing (seen as unlisted) and delete listed ones (seen as missing), both reported as
  // damage. (A just-opened writable ledger may compact. Read-only ones have no background work.)
  const bool paused = db->PauseBackgroundWork().ok();
  struct Resume {
    rocksdb::DB* db;
    bool paused;
    ~Resume() {
      if (paused) (void)db->ContinueBackgroundWork();
    }
  } resume{db, paused};
  std::vector<rocksdb::LiveFileMetaData> files;
  db->GetLiveFilesMetaData(&files);
  std::set<std::string> listed;
  for (const auto& f : files) {
    listed.insert(f.relative_filename);
    auto cf = by_name.find(f.column_family_name);
    if (cf == by_name.end()) continue;  // a column family this build does not open
    if (absl::Status st = CheckOne(db, cf->second, f, ledger_path); !st.ok()) return st;
  }
  std::error_code ec;
  std::vector<std::string> unlisted;
  for (const auto& e : std::filesystem::directory_iterator(ledger_path, ec)) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() != ".sst" || listed.contains(name)) continue;
    if (absl::Status st = CheckUnlisted(db, ledger_path, name, ledger_path); !st.ok()) return st;
    unlisted.push_back(name);
  }
  if (!unlisted.empty()) return OpenAsPrimaryWould(db, handles, unlisted, ledger_path);
  return absl::OkStatus();
}

}  // namespace gpuledger::ledger
