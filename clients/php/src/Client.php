<?php

declare(strict_types=1);

namespace WaBlast\Webhooks;

/**
 * Posts events to the WA Blast webhook operator's ingestion API
 * (docs/events.md, docs/openapi.json). No dependencies: PHP's HTTP stream
 * wrapper sends the requests.
 *
 * It retries what the API says may be retried, 429 and 503, after the
 * answer's Retry-After (capped by maxBackoff) or after a capped, jittered
 * exponential backoff. A request that got no answer is retried only when
 * every event has an id, because only then can the API tell the second post
 * from a new event. Every other error is thrown at once as an ApiException.
 *
 *     $client = new Client('http://webhook-operator-ingest.webhook-system:8082', $token);
 *     $result = $client->post('shop', [
 *         'id' => 'msg-8f2c:delivered',
 *         'type' => 'message.delivered',
 *         'data' => ['messageId' => 'msg-8f2c', 'sessionId' => 's-1', 'to' => '+6281234567890'],
 *     ]);
 *     // ['id' => 'msg-8f2c:delivered', 'subscribers' => 1] (and 'duplicate' => true when it was)
 */
final class Client
{
    public const MAX_BATCH_EVENTS = 1000;

    /** @var callable(float):void */
    private $sleep;

    /**
     * @param string $baseUrl scheme, host and port of the ingestion API
     * @param string $token a static ingest token, or a ServiceAccount token with the audience webhooks.wablast.io
     * @param int $maxAttempts how many times a request is sent at most (1 disables retries)
     * @param float $minBackoff seconds before the first retry without Retry-After
     * @param float $maxBackoff the longest wait between attempts, in seconds
     * @param float $timeout seconds to wait for an answer (a post is answered once the events are stored)
     * @param callable(float):void|null $sleep waits the given seconds (tests replace it)
     */
    public function __construct(
        private readonly string $baseUrl,
        private readonly string $token,
        private readonly int $maxAttempts = 6,
        private readonly float $minBackoff = 0.5,
        private readonly float $maxBackoff = 30.0,
        private readonly float $timeout = 30.0,
        ?callable $sleep = null,
    ) {
        $this->sleep = $sleep ?? static function (float $seconds): void {
            usleep((int) round($seconds * 1e6));
        };
    }

    /**
     * Posts one event: ['id' => ..., 'type' => ..., 'timestamp' => ..., 'data' => [...]];
     * id and timestamp are optional. Returns the API's answer.
     *
     * @param array<string,mixed> $event
     * @return array{id:string,subscribers:int,duplicate?:bool}
     */
    public function post(string $namespace, array $event): array
    {
        return $this->send($namespace, 'application/json', self::encode($event), isset($event['id']) && $event['id'] !== '');
    }

    /**
     * Posts events as one batch: all are accepted or none. Returns the
     * answers in the order of the events.
     *
     * @param list<array<string,mixed>> $events
     * @return list<array{id:string,subscribers:int,duplicate?:bool}>
     */
    public function postBatch(string $namespace, array $events): array
    {
        $n = count($events);
        if ($n === 0 || $n > self::MAX_BATCH_EVENTS) {
            throw new \InvalidArgumentException(sprintf('a batch holds 1 to %d events, not %d', self::MAX_BATCH_EVENTS, $n));
        }
        $body = '';
        $withIds = true;
        foreach ($events as $event) {
            $body .= self::encode($event) . "\n";
            $withIds = $withIds && isset($event['id']) && $event['id'] !== '';
        }
        $answer = $this->send($namespace, 'application/x-ndjson', $body, $withIds);
        if (!isset($answer['events']) || count($answer['events']) !== $n) {
            throw new \UnexpectedValueException(sprintf('ingestion API: %d answers for %d events', count($answer['events'] ?? []), $n));
        }
        return $answer['events'];
    }

    /**
     * The JSON the client sends for an event (one line of a batch). Use
     * \stdClass (or (object) []) for an empty object inside data: an empty
     * PHP array is a JSON list. PHP reads integers over PHP_INT_MAX as floats.
     *
     * @param array<string,mixed> $event
     */
    public static function encode(array $event): string
    {
        if (!array_key_exists('data', $event)) {
            throw new \InvalidArgumentException('an event needs data');
        }
        // An empty PHP array is a JSON list; data is an object.
        if ($event['data'] === []) {
            $event['data'] = new \stdClass();
        }
        return json_encode($event, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR);
    }

    /** @return array<string,mixed> */
    private function send(string $namespace, string $contentType, string $body, bool $idempotent): array
    {
        $url = rtrim($this->baseUrl, '/') . '/v1/namespaces/' . rawurlencode($namespace) . '/events';
        $attempts = max($this->maxAttempts, 1);
        for ($attempt = 1; ; $attempt++) {
            try {
                return $this->once($url, $contentType, $body);
            } catch (ApiException $e) {
                if (!$e->isRetryable() || $attempt >= $attempts) {
                    throw $e;
                }
                $wait = $e->retryAfter !== null ? (float) $e->retryAfter : $this->backoff($attempt);
            } catch (TransportException $e) {
                if (!$idempotent || $attempt >= $attempts) {
                    throw $e;
                }
                $wait = $this->backoff($attempt);
            }
            ($this->sleep)(min($wait, $this->maxBackoff));
        }
    }

    /**
     * The wait after the attempt-th failed attempt without Retry-After:
     * minBackoff doubled each time, capped by maxBackoff, then a random half
     * to all of it, so that producers that failed together do not come back together.
     */
    public function backoff(int $attempt): float
    {
        $d = min($this->minBackoff * (2 ** ($attempt - 1)), $this->maxBackoff);
        return $d / 2 + $d / 2 * (random_int(0, 1_000_000) / 1_000_000);
    }

    /** @return array<string,mixed> */
    private function once(string $url, string $contentType, string $body): array
    {
        $context = stream_context_create(['http' => [
            'method' => 'POST',
            'header' => "Content-Type: {$contentType}\r\nAuthorization: Bearer {$this->token}\r\nAccept: application/json\r\n",
            'content' => $body,
            'timeout' => $this->timeout,
            'ignore_errors' => true, // an error status is an answer, with a body to read
            'protocol_version' => 1.1,
            'follow_location' => 0,
        ]]);
        $response = @file_get_contents($url, false, $context);
        /** @var list<string>|null $http_response_header */
        $headers = $http_response_header ?? [];
        if ($response === false || $headers === []) {
            $error = error_get_last();
            throw new TransportException('ingestion API: no answer from ' . $url . ': ' . ($error['message'] ?? 'unknown error'));
        }
        $status = 0;
        $retryAfter = null;
        foreach ($headers as $line) {
            if (preg_match('#^HTTP/\S+\s+(\d{3})#', $line, $m) === 1) {
                $status = (int) $m[1]; // the last status line wins (after a 100 Continue)
                $retryAfter = null;
            } elseif (preg_match('#^Retry-After:\s*(\d+)\s*$#i', $line, $m) === 1) {
                $retryAfter = (int) $m[1];
            }
        }
        $decoded = json_decode($response, true);
        if ($status === 202) {
            if (!is_array($decoded)) {
                throw new \UnexpectedValueException('ingestion API: a 202 that is not JSON: ' . substr($response, 0, 200));
            }
            return $decoded;
        }
        $error = is_array($decoded) && isset($decoded['error']['code']) ? $decoded['error'] : null;
        throw new ApiException(
            $status,
            $error['code'] ?? 'unknown',
            $error['message'] ?? trim(substr($response, 0, 500)),
            $error['lines'] ?? [],
            $error['details'] ?? [],
            $retryAfter,
            $error['violations'] ?? [],
        );
    }
}
