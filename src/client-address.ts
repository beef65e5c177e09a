/**
 * The address a request came from: the socket's, or, only when the socket is a trusted reverse
 * proxy (TRUST_PROXY), the nearest untrusted hop in X-Forwarded-For. Anyone can write that header,
 * so believing it from untrusted peers would let a client pick its own rate-limit bucket.
 */
import type { AddressSet } from './config.ts'

const unmap = (address: string) => (address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address)

export function clientAddress(socket: string | undefined, forwardedFor: string | null, trust: AddressSet | undefined): string | undefined {
  if (socket === undefined) return undefined
  const peer = unmap(socket)
  if (!trust || !forwardedFor || !trust.has(peer)) return peer
  const hops = forwardedFor.split(',').map((h) => unmap(h.trim())).filter(Boolean)
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!trust.has(hops[i]!)) return hops[i]
  }
  return hops[0] ?? peer
}
