// A thin helper over Repogate's protobuf-es stubs (src/gen, from `buf generate`) and Connect's
// gRPC transport for Node:
//
// - connect(baseUrl, tenant) makes clients whose calls carry x-tenant-id (and x-transaction-id
//   inside transaction()), plus fixed headers such as an authorization header;
// - transaction(conn, fn) begins a transaction, runs fn with its id sent on every call made
//   in it, commits when fn resolves and rolls back when it throws;
// - errorDetails(err) decodes the AIP-193 details of a failed call: ErrorInfo and BadRequest.
import { AsyncLocalStorage } from "node:async_hooks";

import type { DescService, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { BadRequestSchema, ErrorInfoSchema, type BadRequest, type ErrorInfo } from "./gen/google/rpc/error_details_pb.js";
import { TransactionService, type TransactionOptionsSchema, type Transaction } from "./gen/repogate/v1/transaction_pb.js";

export const TENANT_HEADER = "x-tenant-id";
export const TRANSACTION_HEADER = "x-transaction-id";

const currentTransaction = new AsyncLocalStorage<string>();

export interface Connection {
  readonly transport: Transport;
  client<S extends DescService>(service: S): Client<S>;
}

/** Clients of Repogate at baseUrl ("http://127.0.0.1:50051"), each call carrying tenant. */
export function connect(baseUrl: string, tenant: string, headers: Record<string, string> = {}): Connection {
  const metadata: Interceptor = (next) => async (req) => {
    req.header.set(TENANT_HEADER, tenant);
    for (const [key, value] of Object.entries(headers)) req.header.set(key, value);
    const transactionId = currentTransaction.getStore();
    if (transactionId !== undefined) req.header.set(TRANSACTION_HEADER, transactionId);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl, interceptors: [metadata] });
  return { transport, client: (service) => createClient(service, transport) };
}

/** Runs fn in a transaction: commit when it resolves, rollback (and rethrow) when it throws. */
export async function transaction<R>(
  conn: Connection,
  fn: (transaction: Transaction) => Promise<R>,
  options?: MessageInitShape<typeof TransactionOptionsSchema>,
): Promise<R> {
  const transactions = conn.client(TransactionService);
  const begun = await transactions.beginTransaction({ options });
  let result: R;
  try {
    result = await currentTransaction.run(begun.id, () => fn(begun));
  } catch (err) {
    await transactions.rollback({ transactionId: begun.id });
    throw err;
  }
  await transactions.commit({ transactionId: begun.id });
  return result;
}

export interface ErrorDetails {
  /** The gRPC code's name, such as "INVALID_ARGUMENT". */
  code: string;
  message: string;
  errorInfo?: ErrorInfo;
  badRequest?: BadRequest;
}

/** The code, message, ErrorInfo and BadRequest of a failed call (grpc-status-details-bin). */
export function errorDetails(err: unknown): ErrorDetails {
  const error = ConnectError.from(err);
  return {
    code: Code[error.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase(),
    message: error.rawMessage,
    errorInfo: error.findDetails(ErrorInfoSchema)[0],
    badRequest: error.findDetails(BadRequestSchema)[0],
  };
}
