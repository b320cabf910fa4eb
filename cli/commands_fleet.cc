// forge workers.
#include "cli/commands.h"
#include "cli/fleet_view.h"
#include "common/status_macros.h"

namespace forge::cli {

absl::Status RunWorkers(const CommandEnv& env, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListWorkersResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->workers().ListWorkers(context.get(), forge::v1::ListWorkersRequest(), &response)));
  if (format == OutputFormat::kTable && response.workers().empty()) {
    *env.err << "no workers have registered\n";
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return WorkersTable(response, env.clock->Now()); });
}

}  // namespace forge::cli
