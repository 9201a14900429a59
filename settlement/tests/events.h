// Registry and usage events for settlement tests.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"

namespace gpuledger::settlement::testing {

namespace v1 = gpuledger::v1;

inline constexpr int64_t kHour = 3'600'000;

inline v1::RegistryEvent Institution(const std::string& id, v1::InstitutionType type,
                                     int64_t from) {
  v1::RegistryEvent e;
  auto* i = e.mutable_institution();
  i->set_institution_id(id);
  i->set_name(id + " name");
  i->set_type(type);
  i->set_effective_from_ms(from);
  return e;
}

inline v1::RegistryEvent Allocation(const std::string& id, const std::string& inst,
                                    const std::string& csp = "csp-a", uint32_t gpus = 16,
                                    v1::Program program = v1::GOV_ADVANCED,
                                    v1::GpuModel model = v1::H200) {
  v1::RegistryEvent e;
  auto* a = e.mutable_allocation();
  a->set_allocation_id(id);
  a->set_institution_id(inst);
  a->set_program(program);
  a->set_csp_id(csp);
  a->set_gpu_model(model);
  a->set_gpu_count(gpus);
  a->set_start_ms(0);
  a->set_end_ms(base::Period{2027, 1}.StartMs());
  return e;
}

inline v1::RegistryEvent Rate(int64_t krw, int64_t from, v1::Program program = v1::GOV_ADVANCED,
                              v1::GpuModel model = v1::H200) {
  v1::RegistryEvent e;
  auto* r = e.mutable_rate_card();
  r->set_program(program);
  r->set_gpu_model(model);
  r->set_krw_per_gpu_hour(krw);
  r->set_effective_from_ms(from);
  return e;
}

// A party with a valid registration number built from `nine` digits.
inline v1::RegistryEvent Party(const std::string& id, const std::string& legal_name,
                               const std::string& nine, v1::TaxType tax = v1::TAX_TYPE_UNSPECIFIED,
                               int64_t from = 0) {
  v1::RegistryEvent e;
  auto* p = e.mutable_party();
  p->set_party_id(id);
  p->set_legal_name(legal_name);
  int w[9] = {1, 3, 7, 1, 3, 7, 1, 3, 5}, sum = 0;
  for (int i = 0; i < 9; ++i) sum += (nine[i] - '0') * w[i];
  sum += (nine[8] - '0') * 5 / 10;
  p->set_registration_number(nine + std::to_string((10 - sum % 10) % 10));
  p->set_representative(legal_name + " 대표");
  p->set_address("서울특별시 중구 세종대로 110");
  p->mutable_billing_contact()->set_email("billing@" + id + ".example");
  p->set_tax_type(tax);
  p->set_effective_from_ms(from);
  return e;
}

inline v1::RegistryEvent Terms(const std::string& operator_party, uint32_t vat_bp,
                               v1::VatRounding rounding, uint32_t due_days,
                               std::vector<std::pair<v1::Program, v1::InvoiceIssuer>> issuers = {},
                               bool invoice_nothing_owed = false, int64_t from = 0) {
  v1::RegistryEvent e;
  auto* t = e.mutable_billing_terms();
  t->set_operator_party_id(operator_party);
  t->set_vat_bp(vat_bp);
  t->set_vat_rounding(rounding);
  t->set_payment_due_days(due_days);
  t->set_payment_instructions(
      "국민은행 123-456-789012 (예금주: 운영기관), 청구서 번호를 적어 주십시오");
  for (const auto& [program, issuer] : issuers) {
    auto* r = t->add_issuers();
    r->set_program(program);
    r->set_issuer(issuer);
  }
  t->set_invoice_nothing_owed(invoice_nothing_owed);
  t->set_effective_from_ms(from);
  return e;
}

inline v1::RegistryEvent Copay(v1::InstitutionType type, uint32_t bp, int64_t from) {
  v1::RegistryEvent e;
  auto* p = e.mutable_copay_policy();
  p->set_institution_type(type);
  p->set_copay_bp(bp);
  p->set_effective_from_ms(from);
  return e;
}

// A programme policy whose over-cap rule for `type` is `action` (at `bp` for OVER_CAP_BILL_AT).
inline v1::RegistryEvent OverCap(v1::InstitutionType type, v1::OverCapAction action,
                                 uint32_t bp = 0, int64_t from = 0,
                                 v1::Program program = v1::GOV_ADVANCED) {
  v1::RegistryEvent e;
  auto* p = e.mutable_programme_policy();
  p->set_program(program);
  p->set_effective_from_ms(from);
  auto* r = p->add_over_cap_rules();
  r->set_institution_type(type);
  r->set_action(action);
  r->set_copay_bp(bp);
  return e;
}

inline v1::RegistryEvent Release(const std::string& allocation_id, uint32_t bp) {
  v1::RegistryEvent e;
  e.mutable_over_cap_release()->set_allocation_id(allocation_id);
  e.mutable_over_cap_release()->set_copay_bp(bp);
  return e;
}

inline v1::RegistryEvent Pool(const std::string& csp, uint32_t gpus, int64_t from,
                              v1::Program program = v1::GOV_ADVANCED,
                              v1::GpuModel model = v1::H200) {
  v1::RegistryEvent e;
  auto* p = e.mutable_gpu_pool();
  p->set_csp_id(csp);
  p->set_program(program);
  p->set_gpu_model(model);
  p->set_gpu_count(gpus);
  p->set_effective_from_ms(from);
  return e;
}

inline v1::RegistryEvent Contract(const std::string& csp, uint32_t cap_bp, int64_t from) {
  v1::RegistryEvent e;
  auto* c = e.mutable_csp_contract();
  c->set_csp_id(csp);
  c->set_own_use_cap_bp(cap_bp);
  c->set_effective_from_ms(from);
  return e;
}

inline v1::UsageEvent Usage(const std::string& id, const std::string& alloc, uint32_t gpus,
                            int64_t start, int64_t end, v1::GpuModel model = v1::H200) {
  v1::UsageEvent e;
  e.set_event_id(id);
  auto* u = e.mutable_usage();
  u->set_allocation_id(alloc);
  u->set_gpu_model(model);
  u->set_gpu_count(gpus);
  u->set_start_ms(start);
  u->set_end_ms(end);
  return e;
}

inline v1::UsageEvent Correction(const std::string& id, const std::string& target,
                                 const std::string& alloc, const v1::UsageEvent* replacement) {
  v1::UsageEvent e;
  e.set_event_id(id);
  auto* c = e.mutable_correction();
  c->set_target_event_id(target);
  c->set_allocation_id(alloc);
  if (replacement != nullptr) *c->mutable_replacement() = replacement->usage();
  return e;
}

inline v1::UsageEvent OwnUse(const std::string& id, uint32_t gpus, int64_t start, int64_t end,
                             v1::Program program = v1::GOV_ADVANCED,
                             v1::GpuModel model = v1::H200) {
  v1::UsageEvent e;
  e.set_event_id(id);
  auto* o = e.mutable_own_use();
  o->set_program(program);
  o->set_gpu_model(model);
  o->set_gpu_count(gpus);
  o->set_start_ms(start);
  o->set_end_ms(end);
  return e;
}

inline v1::UsageEvent Outage(const std::string& id, const std::string& alloc, uint32_t gpus,
                             int64_t start, int64_t end, const std::string& cause,
                             v1::Program program = v1::GOV_ADVANCED,
                             v1::GpuModel model = v1::H200) {
  v1::UsageEvent e;
  e.set_event_id(id);
  auto* o = e.mutable_outage();
  o->set_allocation_id(alloc);
  o->set_program(program);
  o->set_gpu_model(model);
  o->set_gpu_count(gpus);
  o->set_start_ms(start);
  o->set_end_ms(end);
  o->set_cause(cause);
  return e;
}

}  // namespace gpuledger::settlement::testing
