// The control protocol: what each request on the control socket asks of
// the running agent, and the answer (control.h carries them).
//
//   {"cmd":"dump"}                 the live tables
//   {"cmd":"dump","since_s":600}   tables rebuilt from the store's last 10 minutes
//   {"cmd":"ping"}                 {"ok":true,"pid":...}
//   {"cmd":"flush"}                the store written out: {"ok":true,"store":"/path"}
//                                  (`rstwatch explain --socket` then reads it)
//
// Anything else gets {"error": "..."} and the agent carries on.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "control/control.h"
#include "tables/tables.h"

namespace rstwatch {

// What the protocol needs from the agent. Requests arrive on the clients'
// threads, several at once: the callbacks must allow that.
struct ControlledAgent {
    // Live dumps are answered where the tables live: the run loop's
    // run_pending() gets {"cmd":"dump"} and returns the response.
    MainThreadCalls *main_thread = nullptr;
    // The store the agent writes; "" with --store none.
    std::string store_path;
    // Everything reported so far, into the store (before a --since dump).
    std::function<void()> flush_store;
    // The agent's lost counts, into tables rebuilt from the store.
    std::function<void(AttributionTables &)> fill_lost;
};

// The ControlServer handler that answers for `agent`.
ControlServer::Handler control_protocol(ControlledAgent agent);

// How long a live dump may wait for the run loop.
constexpr std::chrono::seconds kLiveDumpTimeout{5};

// Adds a store's records at or after since_ns (CLOCK_REALTIME) to tables.
// Returns how many; those that could not be read back are counted in
// *skipped. Throws FatalError when the store cannot be read.
uint64_t add_from_store(const std::string &path, int64_t since_ns, AttributionTables &tables, uint64_t *skipped);

// CLOCK_REALTIME `seconds` ago, in nanoseconds; 0 (the epoch) for longer
// ago than that, so that no --since overflows.
int64_t realtime_ns_ago(double seconds);

}  // namespace rstwatch
