// JSON Schema (draft 2020-12) of the JSON form of gpuledger's events, as `gpuledger publish` and
// POST /v1/events read it (ingest/src/json_message.h), made from the compiled-in descriptors of
// schemas/gpuledger/v1: what a CSP's developer validates against before sending. The build
// writes them to build/schemas/ (`gpuledger schemas json-schema`), beside the descriptor set
// protoc makes of the same .proto files.
#pragma once

#include <string>
#include <string_view>

#include "google/protobuf/descriptor.h"

namespace gpuledger::ingest {

// The schema of `message`'s JSON form, with `id` as its $id. Field names are the JSON names
// (lowerCamelCase); 64-bit integers are numbers or decimal strings, time fields (...Ms) also
// RFC 3339 strings; enums by name or number; no member outside the schema; at most one member
// of a oneof.
std::string JsonSchemaOf(const google::protobuf::Descriptor* message, std::string_view id);

}  // namespace gpuledger::ingest
