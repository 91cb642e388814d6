// Calls Repogate with @repogate/client: users, a filtered and paged list, an update with an
// etag, transactions, and AIP-193 error details; the steps of clients/node, go and python.
//
//   node dist/example.js [ADDRESS]     (or REPOGATE_ADDRESS; default 127.0.0.1:50051)
//
// Prints one line per step; exits 1 on the first unexpected result.
import { randomUUID } from "node:crypto";

import { connect, errorDetails, transaction, type ErrorDetails } from "./index.js";
import { UserService } from "./gen/repogate/v1/user_pb.js";

const address = process.argv[2] ?? process.env.REPOGATE_ADDRESS ?? "127.0.0.1:50051";
const tenant = `typescript-${randomUUID().slice(0, 8)}`;
const conn = connect(`http://${address}`, tenant);
const users = conn.client(UserService);
const timeoutMs = 10_000;

function fail(message: string): never {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

function check(condition: unknown, message: string): void {
  if (!condition) fail(message);
}

async function fails(promise: Promise<unknown>, code: string, reason: string): Promise<ErrorDetails> {
  try {
    await promise;
  } catch (err) {
    const found = errorDetails(err);
    check(found.code === code && found.errorInfo?.reason === reason,
      `expected ${code} ${reason}, got ${found.code} ${found.errorInfo?.reason}: ${found.message}`);
    return found;
  }
  return fail(`expected ${code} ${reason}, the call succeeded`);
}

async function exists(id: string): Promise<boolean> {
  try {
    await users.getUser({ id }, { timeoutMs });
    return true;
  } catch (err) {
    if (errorDetails(err).code === "NOT_FOUND") return false;
    throw err;
  }
}

async function main(): Promise<void> {
  console.log(`address ${address}, tenant ${tenant}`);

  const names = ["ann", "bob", "cid", "dee", "eve"];
  const created = [];
  for (const [i, name] of names.entries()) {
    const displayName = i < 3 ? `Typescript ${name}` : `Other ${name}`;
    created.push(await users.createUser({ user: { email: `${name}@example.com`, username: name, displayName } }, { timeoutMs }));
  }
  console.log(`created ${created.length} users: ${created.map((u) => u.username).join(", ")}`);

  const listed: string[] = [];
  let pages = 0;
  let pageToken = "";
  do {
    const page = await users.listUsers({ filter: 'display_name = "Typescript*"', pageSize: 2, pageToken }, { timeoutMs });
    listed.push(...page.users.map((u) => u.username));
    pageToken = page.nextPageToken;
    pages += 1;
    check(pages <= 10, "paging does not end");
  } while (pageToken);
  check(listed.join() === "ann,bob,cid", `filtered list gave ${listed}`);
  console.log(`listed display_name = "Typescript*" with page_size 2: ${listed.join(", ")} in ${pages} pages`);

  const ann = created[0];
  const mask = { paths: ["display_name"] };
  const updated = await users.updateUser({ user: { id: ann.id, displayName: "Typescript Ann B", etag: ann.etag }, updateMask: mask });
  check(updated.displayName === "Typescript Ann B" && updated.etag !== ann.etag, "update with the etag did not apply");
  console.log(`updated ann with etag ${ann.etag}: display_name "${updated.displayName}", etag now ${updated.etag}`);
  const stale = await fails(users.updateUser({ user: { id: ann.id, displayName: "lost", etag: ann.etag }, updateMask: mask }),
    "ABORTED", "ETAG_MISMATCH");
  console.log(`update with the stale etag ${ann.etag}: ${stale.code} ${stale.errorInfo?.reason}`);

  const fay = await transaction(conn, async () => {
    const inside = await users.createUser({ user: { email: "fay@example.com", username: "fay" } });
    check(await exists(inside.id), "fay is not visible inside her transaction");
    return inside;
  }, { idleTimeout: { seconds: 30n } });
  check(await exists(fay.id), "fay is missing after commit");
  console.log("transaction: begin, create fay, commit: fay exists");

  let gusId = "";
  await transaction(conn, async () => {
    gusId = (await users.createUser({ user: { email: "gus@example.com", username: "gus" } })).id;
    throw new Error("undo");
  }).catch((err: Error) => check(err.message === "undo", `rollback: ${err}`));
  check(gusId && !(await exists(gusId)), "gus exists after rollback");
  console.log("transaction: begin, create gus, rollback: gus is absent");

  const bad = await fails(users.createUser({ user: { email: "not-an-email", username: "hal" } }),
    "INVALID_ARGUMENT", "INVALID_ARGUMENT");
  check(bad.errorInfo?.domain === "repogate.dev", `ErrorInfo domain is ${bad.errorInfo?.domain}`);
  check(bad.errorInfo?.metadata.request_id, "ErrorInfo metadata has no request_id");
  const violations = bad.badRequest?.fieldViolations ?? [];
  check(violations.some((v) => v.field === "user.email"), "BadRequest names no user.email");
  console.log(`invalid email: ${bad.code}, ErrorInfo reason ${bad.errorInfo?.reason}, domain ${bad.errorInfo?.domain}, `
    + `metadata ${JSON.stringify(bad.errorInfo?.metadata)}`);
  for (const v of violations) console.log(`  BadRequest ${v.field}: ${v.description}`);

  console.log("typescript example: OK");
}

main().catch((err) => fail(err instanceof Error ? (err.stack ?? err.message) : String(err)));
