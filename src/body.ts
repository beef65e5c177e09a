/**
 * Reads a request body with a size limit, before anything parses it: an oversized body is refused
 * with 413 and never buffered, whatever Content-Length claims.
 */
import { badRequest, tooLarge } from './errors.ts'

const decoder = new TextDecoder('utf-8', { fatal: true })

export async function readBodyText(request: Request, limit: number): Promise<string> {
  const declared = Number(request.headers.get('content-length'))
  if (declared > limit) {
    // A client that is still sending does not read the answer (Bun's and Node's fetch among them):
    // the rest is read and dropped so the 413 reaches it. The server's maxRequestBodySize bounds this.
    await discard(request)
    throw tooLarge(limit)
  }
  // With a Content-Length (and no chunked encoding) the server never hands over more bytes than it
  // declares: one read, without the ReadableStream machinery that cost a tenth of a notification.
  if (declared > 0 && Number.isInteger(declared) && !request.headers.has('transfer-encoding')) {
    const bytes = await request.bytes()
    if (bytes.byteLength > limit) throw tooLarge(limit)
    return decodeUtf8(bytes)
  }
  const reader = request.body?.getReader()
  if (!reader) return ''
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > limit) {
      await reader.cancel().catch(() => {})
      throw tooLarge(limit)
    }
    chunks.push(value)
  }
  return decodeUtf8(Buffer.concat(chunks))
}

async function discard(request: Request) {
  try {
    for await (const _ of request.body ?? []) {
      // dropped
    }
  } catch {
    // The client gave up; the 413 is answered all the same.
  }
}

function decodeUtf8(bytes: Uint8Array): string {
  try {
    return decoder.decode(bytes)
  } catch {
    throw badRequest('Request body is not valid UTF-8')
  }
}
