import ctypes, numpy as np, scipy_openblas32 as s
lib=ctypes.CDLL(s.get_lib_dir()+'/libscipy_openblas.so')
lib.scipy_openblas_set_num_threads(1)
from fasttrap.model import data
ds=data.load('mnist')
P=ctypes.c_void_p
def gemm(dt, A, Bm, M, N, K, C, ldc):
    f = ctypes.c_float if dt == np.float32 else ctypes.c_double
    fn = lib.scipy_cblas_sgemm if dt == np.float32 else lib.scipy_cblas_dgemm
    fn(101,111,112,M,N,K,f(1.0),A.ctypes.data_as(P),K,Bm.ctypes.data_as(P),K,f(0.0),C.ctypes.data_as(P),ldc)
for dt in [np.float32, np.float64]:
  for B in [128, 100, 37]:
    X=np.ascontiguousarray(ds.X_train[2000:2000+B], dt); n0=784
    G=np.zeros((B,B),dt); gemm(dt, X, X, B, B, n0, G, B)
    res=[]
    for nb in [2,4,8]:
      bs=(B+nb-1)//nb
      H=np.zeros((B,B),dt)
      for i0 in range(0,B,bs):
        i1=min(B,i0+bs)
        Xi=np.ascontiguousarray(X[i0:i1]); Hi=np.zeros((i1-i0,i1),dt)
        gemm(dt, Xi, X, i1-i0, i1, n0, Hi, i1)
        H[i0:i1,:i1]=Hi
      il=np.tril_indices(B)
      res.append((nb, np.array_equal(G[il],H[il])))
    # column blocks (as the shared path's gram_cols)
    H=np.zeros((B,B),dt); cb=(B+1)//2
    for c0 in range(0,B,cb):
      c1=min(B,c0+cb); Xc=np.ascontiguousarray(X[c0:c1]); Hc=np.zeros((B,c1-c0),dt); gemm(dt,X,Xc,B,c1-c0,n0,Hc,c1-c0); H[:,c0:c1]=Hc
    print(dt.__name__, B, res, 'colblocks', np.array_equal(G,H))
