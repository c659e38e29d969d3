// What the client throws: the API's problems, and the outcomes of waiting.
import type { Batch, Chain, Job, Problem } from "./types.js";

export class ImagegenClientError extends Error {
  override name = "ImagegenClientError";
}

/** The API answered with an error; `problem` says what and names each bad field. */
export class ApiError extends ImagegenClientError {
  override name = "ApiError";
  readonly status: number;

  constructor(
    readonly problem: Problem,
    /** Seconds the server asked to wait (`Retry-After`), when it did. */
    readonly retryAfterSeconds: number | undefined,
  ) {
    const fields = (problem.errors ?? []).map((e) => `${e.field}: ${e.message}`).join("; ");
    super(`${problem.status} ${problem.title}: ${problem.detail}${fields ? ` (${fields})` : ""}`);
    this.status = problem.status;
  }
}

/** The job ended without an image (failed, filtered, canceled, expired, over budget). */
export class JobFailedError extends ImagegenClientError {
  override name = "JobFailedError";

  constructor(readonly job: Job) {
    const reason = job.error_code ?? job.finish_reason;
    super(`job ${job.job_id} ended ${job.status}${reason ? `: ${reason}` : ""}`);
  }
}

/** The chain ended without its image; `chain.reason` names the step that stopped it. */
export class ChainFailedError extends ImagegenClientError {
  override name = "ChainFailedError";

  constructor(readonly chain: Chain) {
    super(`chain ${chain.chain_id} failed: ${chain.reason ?? "a step failed"}`);
  }
}

/** A wait ran out of time; `lastSeen` is the job, batch or chain as last read. */
export class WaitTimeoutError extends ImagegenClientError {
  override name = "WaitTimeoutError";

  constructor(
    what: string,
    readonly timeoutMs: number,
    readonly lastSeen: Job | Batch | Chain,
  ) {
    super(`${what} not final after ${timeoutMs} ms`);
  }
}

/** One request took longer than the client's timeout, or the API could not be reached. */
export class RequestFailedError extends ImagegenClientError {
  override name = "RequestFailedError";
}

/** The event stream ended before the job was final (the key was revoked). */
export class StreamEndedError extends ImagegenClientError {
  override name = "StreamEndedError";
}
