// The six causes of an upstream reset (and two negative controls), each as a
// deterministic Scenario. What each one builds is described in causes.cpp.
#pragma once

#include <memory>

#include "scenario_harness.h"

namespace rstwatch::scenarios {

std::unique_ptr<Scenario> make_backend_crash(bool ipv6);
std::unique_ptr<Scenario> make_backend_shutdown(bool ipv6);
std::unique_ptr<Scenario> make_backend_oom(bool ipv6);
std::unique_ptr<Scenario> make_keepalive_race(bool ipv6);
// ttl_evidence: the agent runs with --ttl-evidence, which names the middlebox;
// without it the cause is unknown (on a kernel without the cheap TTL path).
std::unique_ptr<Scenario> make_middlebox_idle(bool ipv6, bool ttl_evidence = true);
std::unique_ptr<Scenario> make_stale_reuse(bool ipv6);
std::unique_ptr<Scenario> make_mtu_blackhole(bool ipv6);

// Negative controls: no upstream reset may be reported for healthy traffic,
// and a client that aborts mid-response is the client's doing.
std::unique_ptr<Scenario> make_healthy();
std::unique_ptr<Scenario> make_client_abort();

}  // namespace rstwatch::scenarios
