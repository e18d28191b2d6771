<?php

declare(strict_types=1);

namespace WaBlast\Webhooks;

/**
 * An answer of the ingestion API other than 202. errorCode is the API's
 * code (for example "schema_violation"); lines and details name the bad
 * lines of a batch; retryAfter is the Retry-After header in seconds, or null.
 */
final class ApiException extends \RuntimeException
{
    /**
     * @param list<int> $lines
     * @param list<array{line:int,code:string,message:string}> $details
     * @param list<array{pointer:string,reason:string}> $violations a schema_violation's violations, each with its JSON Pointer into data
     */
    public function __construct(
        public readonly int $statusCode,
        public readonly string $errorCode,
        string $message,
        public readonly array $lines = [],
        public readonly array $details = [],
        public readonly ?int $retryAfter = null,
        public readonly array $violations = [],
    ) {
        parent::__construct(sprintf('ingestion API: %d %s: %s', $statusCode, $errorCode, $message), $statusCode);
    }

    /** A 429 or a 503: the same request may succeed later. */
    public function isRetryable(): bool
    {
        return $this->statusCode === 429 || $this->statusCode === 503;
    }
}
