// forge admin tenant create|list, forge admin token create|list|revoke.
#include "cli/commands.h"
#include "cli/fleet_view.h"
#include "common/status_macros.h"

namespace forge::cli {
namespace {

// Secrets go to stdout alone so `forge admin ... > file` captures exactly the token.
absl::Status PrintSecret(const CommandEnv& env, const std::string& token, const std::string& what,
                         const std::string& token_id) {
  *env.out << token << "\n";
  env.out->flush();
  *env.err << "forge: created " << what << " (token id " << token_id
           << "). The token is shown only this once: store it now, e.g. in a file (mode 0600) "
              "for --token-file.\n";
  if (!*env.out) return absl::UnknownError("cannot write the token (stdout closed?)");
  return absl::OkStatus();
}

}  // namespace

absl::Status RunTenantCreate(const CommandEnv& env, const std::string& name) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::CreateTenantRequest request;
  request.set_name(name);
  forge::v1::CreateTenantResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(client->admin().CreateTenant(context.get(), request, &response)));
  return PrintSecret(env, response.token(), "tenant " + response.tenant() + " and its token",
                     response.token_id());
}

absl::Status RunTenantList(const CommandEnv& env, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListTenantsResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->admin().ListTenants(context.get(), forge::v1::ListTenantsRequest(), &response)));
  if (format == OutputFormat::kTable && response.tenants().empty()) {
    *env.err << "no tenants\n";
    return absl::OkStatus();
  }
  return WriteOutput(*env.out, format, response,
                     [&] { return TenantsTable(response, env.clock->Now()); });
}

absl::Status RunTokenCreate(const CommandEnv& env, forge::v1::TokenKind kind,
                            const std::string& tenant, const std::string& note) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::CreateTokenRequest request;
  request.set_kind(kind);
  request.set_tenant(tenant);
  request.set_note(note);
  forge::v1::CreateTokenResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(client->admin().CreateToken(context.get(), request, &response)));
  const std::string what = kind == forge::v1::TOKEN_KIND_TENANT
                               ? "a token for tenant " + tenant
                               : "a" +
                                     std::string(kind == forge::v1::TOKEN_KIND_ADMIN ? "n " : " ") +
                                     TokenKindName(kind) + " token";
  return PrintSecret(env, response.token(), what, response.token_id());
}

absl::Status RunTokenList(const CommandEnv& env, OutputFormat format) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::ListTokensResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(
      client->admin().ListTokens(context.get(), forge::v1::ListTokensRequest(), &response)));
  return WriteOutput(*env.out, format, response,
                     [&] { return TokensTable(response, env.clock->Now()); });
}

absl::Status RunTokenRevoke(const CommandEnv& env, const std::string& token_id) {
  ASSIGN_OR_RETURN(CoordinatorClient * client, env.client());
  forge::v1::RevokeTokenRequest request;
  request.set_token_id(token_id);
  forge::v1::RevokeTokenResponse response;
  auto context = client->NewContext();
  RETURN_IF_ERROR(client->Finish(client->admin().RevokeToken(context.get(), request, &response)));
  *env.out << "token " << token_id << " revoked\n";
  return absl::OkStatus();
}

}  // namespace forge::cli
