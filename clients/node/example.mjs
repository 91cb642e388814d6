// Calls Repogate from Node: users, a filtered and paged list, an update with an
// etag, transactions through x-transaction-id, and AIP-193 error details.
//
//   node example.mjs [ADDRESS]     (or REPOGATE_ADDRESS; default 127.0.0.1:50051)
//
// Prints one line per step; exits 1 on the first unexpected result.
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const PROTOS = process.env.REPOGATE_PROTOS ?? path.join(here, "..", "..", "protos");
const GOOGLEAPIS = path.dirname(createRequire(import.meta.url).resolve("google-proto-files/package.json"));
const address = process.argv[2] ?? process.env.REPOGATE_ADDRESS ?? "127.0.0.1:50051";
const tenant = `node-${randomUUID().slice(0, 8)}`;

// The service stubs, built from the committed protos at run time.
const definition = protoLoader.loadSync(["repogate/v1/user.proto", "repogate/v1/transaction.proto"], {
  includeDirs: [PROTOS, GOOGLEAPIS], // google/api annotations from google-proto-files
  keepCase: true, // field names as in the protos: page_size, next_page_token
  longs: String,
  enums: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(definition).repogate.v1;
const users = new v1.UserService(address, grpc.credentials.createInsecure());
const transactions = new v1.TransactionService(address, grpc.credentials.createInsecure());

// google.rpc.Status and its details, from the googleapis protos that google-proto-files ships.
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) => path.join(GOOGLEAPIS, target);
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) fail(message);
}

function metadata(extra = {}) {
  const md = new grpc.Metadata();
  md.set("x-tenant-id", tenant);
  for (const [key, value] of Object.entries(extra)) md.set(key, value);
  return md;
}

function call(client, method, request, extra = {}) {
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata(extra), { deadline }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

// The AIP-193 details of a failed call: code name, ErrorInfo and BadRequest violations.
function details(err) {
  const [raw] = err.metadata?.get("grpc-status-details-bin") ?? [];
  check(raw, `no grpc-status-details-bin on ${err.code}: ${err.details}`);
  const status = Status.decode(raw);
  const found = { code: grpc.status[err.code], info: null, violations: [] };
  for (const any of status.details) {
    const type = rpc.lookupType(any.type_url.slice(any.type_url.lastIndexOf("/") + 1));
    const detail = type.decode(any.value);
    if (type.fullName === ".google.rpc.ErrorInfo") found.info = detail;
    if (type.fullName === ".google.rpc.BadRequest") found.violations = detail.field_violations;
  }
  check(found.info, "no ErrorInfo in the status details");
  return found;
}

async function fails(promise, code, reason) {
  let err;
  try {
    await promise;
  } catch (caught) {
    err = caught;
  }
  check(err, `expected ${code} ${reason}, the call succeeded`);
  const found = details(err);
  check(found.code === code && found.info.reason === reason,
    `expected ${code} ${reason}, got ${found.code} ${found.info.reason}: ${err.details}`);
  return found;
}

async function exists(id, extra = {}) {
  try {
    await call(users, "GetUser", { id }, extra);
    return true;
  } catch (err) {
    if (err.code === grpc.status.NOT_FOUND) return false;
    throw err;
  }
}

async function main() {
  console.log(`address ${address}, tenant ${tenant}`);

  const names = ["ann", "bob", "cid", "dee", "eve"];
  const created = [];
  for (const [i, name] of names.entries()) {
    const display_name = i < 3 ? `Node ${name}` : `Other ${name}`;
    created.push(await call(users, "CreateUser", { user: { email: `${name}@example.com`, username: name, display_name } }));
  }
  console.log(`created ${created.length} users: ${created.map((u) => u.username).join(", ")}`);

  const listed = [];
  let pages = 0;
  let page_token = "";
  do {
    const page = await call(users, "ListUsers", { filter: 'display_name = "Node*"', page_size: 2, page_token });
    listed.push(...page.users.map((u) => u.username));
    page_token = page.next_page_token;
    pages += 1;
    check(pages <= 10, "paging does not end");
  } while (page_token);
  check(listed.join() === "ann,bob,cid", `filtered list gave ${listed}`);
  console.log(`listed display_name = "Node*" with page_size 2: ${listed.join(", ")} in ${pages} pages`);

  const ann = created[0];
  const updated = await call(users, "UpdateUser", {
    user: { id: ann.id, display_name: "Node Ann B", etag: ann.etag },
    update_mask: { paths: ["display_name"] },
  });
  check(updated.display_name === "Node Ann B" && updated.etag !== ann.etag, "update with the etag did not apply");
  console.log(`updated ann with etag ${ann.etag}: display_name "${updated.display_name}", etag now ${updated.etag}`);
  const stale = await fails(call(users, "UpdateUser", {
    user: { id: ann.id, display_name: "lost", etag: ann.etag },
    update_mask: { paths: ["display_name"] },
  }), "ABORTED", "ETAG_MISMATCH");
  console.log(`update with the stale etag ${ann.etag}: ${stale.code} ${stale.info.reason}`);

  let tx = await call(transactions, "BeginTransaction", { options: { idle_timeout: { seconds: 30 } } });
  const inside = await call(users, "CreateUser", { user: { email: "fay@example.com", username: "fay" } },
    { "x-transaction-id": tx.id });
  check(await exists(inside.id, { "x-transaction-id": tx.id }), "fay is not visible inside her transaction");
  check(!(await exists(inside.id)), "fay is visible outside her transaction before commit");
  await call(transactions, "Commit", { transaction_id: tx.id });
  check(await exists(inside.id), "fay is missing after commit");
  console.log("transaction: begin, create fay, visible inside only, commit: fay exists");

  tx = await call(transactions, "BeginTransaction", {});
  const undone = await call(users, "CreateUser", { user: { email: "gus@example.com", username: "gus" } },
    { "x-transaction-id": tx.id });
  await call(transactions, "Rollback", { transaction_id: tx.id });
  check(!(await exists(undone.id)), "gus exists after rollback");
  console.log("transaction: begin, create gus, rollback: gus is absent");

  const bad = await fails(call(users, "CreateUser", { user: { email: "not-an-email", username: "hal" } }),
    "INVALID_ARGUMENT", "INVALID_ARGUMENT");
  check(bad.info.domain === "repogate.dev", `ErrorInfo domain is ${bad.info.domain}`);
  check(bad.info.metadata.request_id, "ErrorInfo metadata has no request_id");
  const fields = bad.violations.map((v) => v.field);
  check(fields.includes("user.email"), `BadRequest fields are ${fields}`);
  console.log(`invalid email: ${bad.code}, ErrorInfo reason ${bad.info.reason}, domain ${bad.info.domain}, `
    + `metadata ${JSON.stringify(bad.info.metadata)}`);
  for (const v of bad.violations) console.log(`  BadRequest ${v.field}: ${v.description}`);

  console.log("node example: OK");
}

main()
  .catch((err) => fail(err.stack ?? String(err)))
  .finally(() => {
    users.close();
    transactions.close();
  });
