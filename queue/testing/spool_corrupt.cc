// Test tool: makes a spool record unreadable, as a bug or a damaged disk could.
//   spool_corrupt SPOOL_DIR NAME [VALUE]
// NAME is a message id, or x<hex> for a key that is not one. Writes VALUE (default: bytes no
// envelope decodes from) as the record's envelope in the meta column family, synced. sluiced must
// not be running (the spool is opened read-write).

#include <cstdio>
#include <string>

#include <rocksdb/db.h>

#include "queue/detail/spool_db.h"
#include "queue/quarantine.h"

int main(int argc, char** argv) {
  using namespace sluice::queue;
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s SPOOL_DIR NAME [VALUE]\n", argv[0]);
    return 2;
  }
  std::optional<std::string> key = QuarantineKeyFromName(argv[2]);
  if (!key) {
    std::fprintf(stderr, "spool_corrupt: '%s' is neither a message id nor x<hex>\n", argv[2]);
    return 2;
  }
  const std::string value = argc == 4 ? argv[3] : std::string("\xff\x00not an envelope", 17);
  auto db = detail::SpoolDb::Open(argv[1], detail::SpoolDb::Mode::kReadWrite, nullptr, "");
  if (!db.ok()) {
    std::fprintf(stderr, "spool_corrupt: %s\n", db.error().message.c_str());
    return 1;
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = (*db)->db()->Put(wo, (*db)->meta(), *key, value);
  if (!s.ok()) {
    std::fprintf(stderr, "spool_corrupt: %s\n", s.ToString().c_str());
    return 1;
  }
  (*db)->Close(/*sync_wal=*/true);
  return 0;
}
