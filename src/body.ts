/**
 * Reads a request body with a size limit, before anything parses it: an oversized body is refused
 * with 413 without being read to the end, whatever Content-Length claims.
 */
import { badRequest, tooLarge } from './errors.ts'

const decoder = new TextDecoder('utf-8', { fatal: true })

export async function readBodyText(request: Request, limit: number): Promise<string> {
  const declared = Number(request.headers.get('content-length'))
  if (declared > limit) throw tooLarge(limit)
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
  try {
    return decoder.decode(Buffer.concat(chunks))
  } catch {
    throw badRequest('Request body is not valid UTF-8')
  }
}
